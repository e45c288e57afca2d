"""Input verdicts are remembered per text (``policies/moderation/memo.py``): a chat's history is
checked once, not on every turn, and a remembered verdict is the one a new check gives."""

from __future__ import annotations

import threading

from policies.moderation.config import InputChecks, ModerationConfig, OutputChecks
from policies.moderation.engine import Moderator
from policies.moderation.memo import ENTRY_OVERHEAD, VerdictMemo
from policies.moderation.verdict import Verdict
from tests.unit.test_moderation.conftest import KeywordScorer

HISTORY = ["Tell me about the history of Lisbon.", "And what about its trams?",
           "Mail the summary to jane.doe@example.com please.", "you utter clown, that was wrong"]


def _moderator(scorer: KeywordScorer) -> Moderator:
    return Moderator(ModerationConfig(input=InputChecks(pii={"email": {"action": "redact"}}),
                                      output=OutputChecks()), scorer)


def test_a_conversations_history_is_scored_once_across_its_turns(scorer: KeywordScorer) -> None:
    moderator = _moderator(scorer)
    for turn in range(1, len(HISTORY) + 1):  # each turn re-sends every earlier message
        for text in HISTORY[:turn]:
            moderator.check_text(text, "input")
    assert len(scorer.calls) == len(HISTORY)  # one classifier batch per distinct text, not 1+2+3+4
    assert moderator.input_memo is not None and moderator.input_memo.hits == 6


def test_a_remembered_verdict_is_the_one_a_fresh_check_gives(scorer: KeywordScorer) -> None:
    remembered, fresh = _moderator(scorer), _moderator(scorer)
    for text in HISTORY:
        remembered.check_text(text, "input")
    for text in HISTORY:
        again, new = remembered.check_text(text, "input"), fresh.check_text(text, "input")
        assert again == new
    redacted = remembered.check_text(HISTORY[2], "input")
    assert "jane.doe" not in redacted.text and redacted.redacted
    assert remembered.check_text(HISTORY[3], "input").findings[0].name == "harassment"


def test_answers_are_not_remembered(scorer: KeywordScorer) -> None:
    moderator = _moderator(scorer)
    moderator.check_text(HISTORY[0], "output")
    moderator.check_text(HISTORY[0], "output")
    assert len(scorer.calls) == 2


def test_the_memo_is_bounded_by_characters_least_recent_first() -> None:
    memo = VerdictMemo(max_chars=10 + 2 * ENTRY_OVERHEAD)
    memo.put("aaaa", Verdict("aaaa"))
    memo.put("bbbb", Verdict("bbbb"))
    assert memo.get("aaaa") is not None  # renewed: bbbb is now the least recent
    memo.put("cccc", Verdict("cccc"))
    assert memo.get("bbbb") is None and memo.get("aaaa") is not None and memo.get("cccc") is not None
    memo.put("x" * (11 + 2 * ENTRY_OVERHEAD), Verdict("x"))  # longer than the whole bound: never kept
    assert len(memo) == 2


def test_each_entry_counts_its_overhead_so_short_texts_cannot_fill_the_memory_long_ones_would() -> None:
    memo = VerdictMemo(max_chars=100_000)
    for i in range(10_000):
        memo.put(f"short {i}", Verdict("x"))
    assert len(memo) <= 100_000 // ENTRY_OVERHEAD  # was every one of them: ~90k characters


def test_the_memo_holds_under_threads() -> None:
    memo = VerdictMemo(max_chars=500)
    texts = [f"text number {i}" for i in range(200)]

    def work(offset: int) -> None:
        for i in range(2_000):
            text = texts[(i + offset) % len(texts)]
            if memo.get(text) is None:
                memo.put(text, Verdict(text))

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(t) + ENTRY_OVERHEAD for t in texts if memo.get(t) is not None) <= 500
    assert all(v.text == t for t in texts if (v := memo.get(t)) is not None)
