"""Typed values that flow between the layers: requests down, responses and chunks back up.

These are the OpenAI wire shapes, as msgspec Structs: decoding validates and names the bad
field, encoding takes microseconds. Optional fields default to ``UNSET`` so that what a client
did not send is not sent upstream either. Unknown top-level request fields are kept in
``extra`` and passed through to the backend (SGLang accepts ``top_k``, ``regex``, ...).

The structs are *open* (``backends.open_wire``): they declare only what the gateway reads or
changes, accept ``null`` wherever the owner's schema (OpenAI's spec, SGLang's pydantic dumps)
allows it, and every field they do not declare is kept on the instance and re-emitted, at any
depth. A field the gateway does not model therefore survives the trip in both directions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

JSONObject = dict[str, Any]
# Bounds OpenAI documents; they also keep absurd numbers from reaching an upstream.
PositiveInt = Annotated[int, Meta(ge=1, le=2**31 - 1)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
ChoiceCount = Annotated[int, Meta(ge=1, le=128)]


class Wire(msgspec.Struct, forbid_unknown_fields=False, dict=True):
    """Base of every wire struct. ``UNSET`` fields are left out when encoding; ``None`` ones
    are sent as ``null``, as OpenAI does (``"finish_reason": null``).

    ``dict=True`` gives each instance a ``__dict__`` that msgspec never encodes: it holds the
    fields the struct does not declare (see ``backends.open_wire``)."""


# --- request ------------------------------------------------------------------------------


class TextPart(Wire, tag="text", tag_field="type"):
    text: str


class ImageURL(Wire):
    url: str
    detail: str | UnsetType = UNSET


class ImagePart(Wire, tag="image_url", tag_field="type"):
    image_url: ImageURL


class InputAudio(Wire):
    data: str
    format: str


class AudioPart(Wire, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FilePart(Wire, tag="file", tag_field="type"):
    file: JSONObject


class RefusalPart(Wire, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


class FunctionCall(Wire):
    name: str
    arguments: str


class ToolCall(Wire):
    """A call the model made: a function call (``function``) or a custom tool's (``custom``:
    ``{"name", "input"}``, free text rather than JSON arguments)."""

    id: str
    function: FunctionCall | UnsetType = UNSET
    type: str = "function"
    custom: JSONObject | UnsetType = UNSET

    @property
    def name(self) -> str:
        """The function's or custom tool's name."""
        if isinstance(self.function, FunctionCall):
            return self.function.name
        name = self.custom.get("name") if isinstance(self.custom, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def arguments(self) -> str:
        """A function call's JSON arguments, or a custom tool call's free-text input."""
        if isinstance(self.function, FunctionCall):
            return self.function.arguments
        text = self.custom.get("input") if isinstance(self.custom, dict) else None
        return text if isinstance(text, str) else ""


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(Wire):
    """One chat message. ``content`` may be null only for an assistant turn with tool calls."""

    role: Role
    content: str | list[ContentPart] | None | UnsetType = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    reasoning_content: str | None | UnsetType = UNSET
    """An earlier assistant turn's reasoning, as SGLang and the Anthropic translation carry it."""
    thinking_blocks: list[JSONObject] | None | UnsetType = UNSET
    """Anthropic's signed ``thinking``/``redacted_thinking`` blocks of an earlier assistant turn,
    carried back so that a thinking + tools conversation can continue."""

    def text(self) -> str:
        """The message's text parts joined; what token counting and moderation look at."""
        if isinstance(self.content, str):
            return self.content
        if not isinstance(self.content, list):
            return ""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class FunctionDef(Wire):
    name: str
    description: str | UnsetType = UNSET
    parameters: JSONObject | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET


class Tool(Wire):
    """A tool the model may call: ``function`` (JSON-schema arguments) or ``custom`` (free-text
    input, ``{"name", "description", "format"}``); other kinds the spec adds pass as they are."""

    type: str = "function"
    function: FunctionDef | UnsetType = UNSET
    custom: JSONObject | UnsetType = UNSET


class StreamOptions(Wire):
    include_usage: bool | UnsetType = UNSET


Stop = str | list[str] | None


class CompletionParams(Wire, kw_only=True):
    """Fields both completion endpoints share: the model and how to sample."""

    model: str
    stream: bool | UnsetType = UNSET
    stream_options: StreamOptions | None | UnsetType = UNSET
    max_tokens: PositiveInt | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: Probability | None | UnsetType = UNSET
    n: ChoiceCount | None | UnsetType = UNSET
    stop: Stop | UnsetType = UNSET
    seed: Seed | None | UnsetType = UNSET
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET


class ChatParams(CompletionParams, kw_only=True):
    """The fields of ``POST /v1/chat/completions`` that the gateway knows and validates."""

    messages: Annotated[list[Message], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None | UnsetType = UNSET
    logprobs: bool | None | UnsetType = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None | UnsetType = UNSET
    tools: list[Tool] | None | UnsetType = UNSET
    tool_choice: str | JSONObject | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    response_format: JSONObject | None | UnsetType = UNSET


class TextParams(CompletionParams, kw_only=True):
    """The fields of ``POST /v1/completions`` that the gateway knows and validates."""

    prompt: str | list[Any]
    """A string, or a list of strings, of token ids, or of token-id lists (checked by the edge)."""
    logprobs: int | None | UnsetType = UNSET
    echo: bool | None | UnsetType = UNSET
    suffix: str | None | UnsetType = UNSET
    best_of: ChoiceCount | None | UnsetType = UNSET


class NativeBody(msgspec.Struct, frozen=True):
    """A door's original request body, for a backend that speaks the door's protocol.

    Such a backend sends ``body`` (its own model name and the gateway's changes applied)
    instead of translating the canonical request, so fields the gateway does not model
    survive. It does so only while ``messages`` is still the very list of canonical messages
    parsed from ``body``: a stage that rewrites the prompt (context trimming, input
    redaction) makes a new list, and the canonical request is translated instead.
    """

    protocol: str
    """``anthropic.messages``: the Messages API's ``POST /v1/messages`` body."""
    body: JSONObject
    messages: list[Message]
    """The canonical messages translated from ``body`` (compared by identity)."""
    headers: dict[str, str] = {}
    """Protocol headers to pass on (``anthropic-beta``)."""

    def applies_to(self, params: ChatParams) -> bool:
        """Whether the body still says what the canonical request says."""
        return params.messages is self.messages


class ChatRequest(msgspec.Struct, frozen=True):
    """A validated chat request as it flows down to a backend.

    ``params.model`` is the public name the client asked for; the backend sends
    ``upstream_model`` instead. ``extra`` holds unknown top-level fields, passed through.
    """

    params: ChatParams
    extra: JSONObject
    upstream_model: str = ""
    trace_headers: dict[str, str] | None = None
    """W3C ``traceparent``/``tracestate`` for the upstream call; never part of the body."""
    native: NativeBody | None = None
    """The door's original body when the door is not OpenAI chat (``NativeBody``)."""

    @property
    def is_stream(self) -> bool:
        return self.params.stream is True

    @property
    def include_usage(self) -> bool:
        """A stream's client asked for the usage chunk (``stream_options.include_usage``)."""
        options = self.params.stream_options
        return bool(options and options.include_usage is True)


class TextRequest(msgspec.Struct, frozen=True):
    """A validated legacy text-completion request; see ``ChatRequest``."""

    params: TextParams
    extra: JSONObject
    upstream_model: str = ""
    trace_headers: dict[str, str] | None = None

    @property
    def is_stream(self) -> bool:
        return self.params.stream is True

    @property
    def include_usage(self) -> bool:
        """A stream's client asked for the usage chunk (``stream_options.include_usage``)."""
        options = self.params.stream_options
        return bool(options and options.include_usage is True)


class EmbeddingParams(Wire, kw_only=True):
    """The fields of ``POST /v1/embeddings`` that the gateway knows and validates."""

    model: str
    input: str | list[Any]
    """A string, a list of strings, a token array or a list of token arrays (checked by the edge)."""
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    dimensions: PositiveInt | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET


class EmbeddingRequest(msgspec.Struct, frozen=True):
    """A validated embeddings request; see ``ChatRequest``. It never streams."""

    params: EmbeddingParams
    extra: JSONObject
    upstream_model: str = ""
    trace_headers: dict[str, str] | None = None

    @property
    def is_stream(self) -> bool:
        return False

    @property
    def include_usage(self) -> bool:
        return False


# --- response -----------------------------------------------------------------------------


class PromptTokensDetails(Wire):
    cached_tokens: int | None = None
    """Prompt tokens read from a prefix cache (SGLang RadixAttention, provider prompt caches)."""
    cache_write_tokens: int | None | UnsetType = UNSET
    """Prompt tokens written to a provider's prompt cache (Anthropic ``cache_creation``)."""


class Usage(Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None | UnsetType = UNSET

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if isinstance(details, PromptTokensDetails) else 0


class ToolCallDelta(Wire):
    """A fragment of a streamed tool call. SGLang sends ``"id": null`` and
    ``"function": {"name": null, ...}`` on every fragment after the first."""

    index: int
    id: str | None | UnsetType = UNSET
    type: str | None | UnsetType = UNSET
    function: JSONObject | None | UnsetType = UNSET


class ResponseMessage(Wire):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None | UnsetType = UNSET
    refusal: str | None = None
    """Always present, ``null`` when there is none, as OpenAI sends it."""
    reasoning_content: str | None | UnsetType = UNSET
    """The model's reasoning (SGLang ``--reasoning-parser``, Anthropic thinking)."""
    thinking_blocks: list[JSONObject] | None | UnsetType = UNSET
    """Anthropic's signed thinking blocks, to be sent back on the next turn."""


class ChatChoice(Wire):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: Any = None
    matched_stop: Any | UnsetType = UNSET
    """SGLang's stop string or token id; declared only so that the commonest undeclared
    field does not cost every chunk the open-world walk (``backends.open_wire``)."""


class ChatResponse(Wire):
    """A complete ``chat.completion`` object."""

    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    object: str = "chat.completion"
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET


class Delta(Wire):
    role: str | None | UnsetType = UNSET
    content: str | None | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | None | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    reasoning_content: str | None | UnsetType = UNSET
    thinking_blocks: list[JSONObject] | None | UnsetType = UNSET


class ChunkChoice(Wire):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: Any | UnsetType = UNSET
    matched_stop: Any | UnsetType = UNSET
    """SGLang's, passed through (see ``ChatChoice.matched_stop``)."""


class ChatChunk(Wire):
    """One ``chat.completion.chunk`` of a stream. A usage-only chunk has no choices."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET


class TextChoice(Wire):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: Any = None
    matched_stop: Any | UnsetType = UNSET
    """SGLang's, passed through (see ``ChatChoice.matched_stop``)."""


class TextResponse(Wire):
    """A ``text_completion`` object; streamed chunks have the same shape."""

    id: str
    created: int
    model: str
    choices: list[TextChoice]
    object: str = "text_completion"
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET


class Embedding(Wire):
    """One input's vector: floats, or base64 of little-endian float32 (``encoding_format``)."""

    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingResponse(Wire):
    """A ``list`` of embeddings, one per input, with the prompt tokens used."""

    data: list[Embedding]
    model: str
    object: str = "list"
    usage: Usage | None | UnsetType = UNSET


class Health(msgspec.Struct, frozen=True):
    """What a health check learned about one worker or provider."""

    ok: bool
    detail: str = ""
    running: int = 0
    """Requests the worker is decoding now (SGLang ``num_running_reqs``)."""
    queued: int = 0
    """Requests waiting in the worker's queue (SGLang ``num_queue_reqs``)."""
    capacity_tokens: int = 0
    """KV-cache capacity (SGLang ``max_total_num_tokens``); 0 when the remote does not say."""
    reports_cached_tokens: bool | None = None
    """Whether answers carry ``cached_tokens`` (SGLang ``--enable-cache-report``, read from
    ``/server_info``); None when not known or not applicable (provider APIs)."""
    load_source: Literal["metrics", "loads", "none"] | None = None
    """Where ``running``/``queued`` came from: SGLang ``/metrics`` (``--enable-metrics``),
    ``/v1/loads`` (always served), or ``"none"`` (neither answered: load reads 0); None when
    not applicable (provider APIs)."""
