"""One JSON line per request: who, what, where it went, how it ended, how long it took."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import msgspec

_ENCODER = msgspec.json.Encoder()


class AccessLog:
    """Writes access records as JSON lines to a stream (stdout by default) or a file.

    ``target``: ``"stdout"``, ``"stderr"``, ``"off"``, or a file path (appended to).
    """

    def __init__(self, target: str | TextIO = "stdout") -> None:
        self._owned = False
        self._stream: TextIO | None
        if not isinstance(target, str):
            self._stream = target
        elif target == "off":
            self._stream = None
        elif target in ("stdout", "stderr"):
            self._stream = sys.stdout if target == "stdout" else sys.stderr
        else:
            self._stream = Path(target).open("a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True
        self._lock = threading.Lock()  # granian runs handlers on several threads

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, record: dict[str, Any]) -> None:
        stream = self._stream
        if stream is None:
            return
        line = _ENCODER.encode(record).decode() + "\n"
        with self._lock:
            try:
                stream.write(line)
                stream.flush()  # one line per request must reach a log shipper now, not at exit
            except (OSError, ValueError):  # a closed pipe must not fail requests
                pass

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None
