"""Verdicts of request texts already checked: each turn of a chat sends its whole history again.

A conversation's tenth turn carries the nine user messages the gateway checked on the turns
before; checking them again makes the input checks of a conversation grow with the square of
its length (an 8,000-token history is ~40 ms of classifier windows per turn). A ``VerdictMemo``
remembers the verdict of each text for one ``Moderator`` (one policy revision: a reload starts
afresh), keyed by the text itself (never by its hash alone: a collision must not hand one text
another's verdict), bounded by the memory it holds, least recently used forgotten first: each
entry counts its text's characters plus ``ENTRY_OVERHEAD`` (a bound on characters alone let
short texts, ~230 bytes an entry for 60 characters, fill ten times the memory long ones do).

A verdict depends only on the text and the policy, so a remembered one is exactly the one a new
check would give. The memo holds texts that the request itself held; it is process memory only,
never stored or logged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from policies.moderation.verdict import Verdict

__all__ = ["DEFAULT_MEMO_CHARS", "ENTRY_OVERHEAD", "VerdictMemo"]

DEFAULT_MEMO_CHARS = 2_000_000
"""Characters of remembered texts, overheads included (about 500k tokens of long histories,
~2-3 MB; or ~9,000 short messages); a history only needs to outlive the pause before its
conversation's next turn."""
ENTRY_OVERHEAD = 200
"""What an entry costs besides its text's characters, in the same unit (bytes of an ASCII text):
the text's object header, the verdict and the ordered dict's node, ~180 measured."""


class VerdictMemo:
    """Remembered verdicts, thread-safe (long inputs are checked in a worker thread).

    Args:
        max_chars: most characters of text (keys) held at once, each entry counting
            ``ENTRY_OVERHEAD`` more.
    """

    def __init__(self, max_chars: int = DEFAULT_MEMO_CHARS) -> None:
        self._max_chars = max_chars
        self._chars = 0
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> Verdict | None:
        """The verdict remembered for ``text``, renewed as most recent; None if there is none."""
        with self._lock:
            verdict = self._verdicts.get(text)
            if verdict is None:
                self.misses += 1
                return None
            self._verdicts.move_to_end(text)
            self.hits += 1
            return verdict

    def put(self, text: str, verdict: Verdict) -> None:
        """Remember ``verdict`` for ``text`` (a text longer than the whole bound is not kept)."""
        if len(text) + ENTRY_OVERHEAD > self._max_chars:
            return
        with self._lock:
            if text in self._verdicts:
                return
            self._verdicts[text] = verdict
            self._chars += len(text) + ENTRY_OVERHEAD
            while self._chars > self._max_chars:
                old, _ = self._verdicts.popitem(last=False)
                self._chars -= len(old) + ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._verdicts)
