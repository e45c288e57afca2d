"""Front doors: each speaks one client protocol and translates it to and from the canonical
request (OpenAI chat or text completion) that every stage of the request path works on."""

from gateway.doors.base import DOOR_STATE, Door, StreamEncoder
from gateway.doors.openai import OPENAI_CHAT, OPENAI_TEXT

__all__ = ["DOOR_STATE", "OPENAI_CHAT", "OPENAI_TEXT", "Door", "StreamEncoder"]
