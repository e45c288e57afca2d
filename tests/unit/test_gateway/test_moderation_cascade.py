"""``moderation.classifier: cascade`` in a policy: the process's cascade is built once, only
when a section names it and checks a category; a cascade that cannot load refuses the policy
with the reason; a process whose policies never name it never imports the encoder."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from backends.types import ChatChunk, ChunkChoice, Delta
from gateway.moderation import ModerationPolicies, StreamGuard, off_loop
from gateway.telemetry import AccessLog, RequestRecord, Telemetry
from policies.moderation import ModerationConfig
from policies.moderation.scorers import ModerationModels
from tests.unit.test_moderation.conftest import KeywordScorer
from tests.unit.test_moderation.test_cascade import Builds

REPO = Path(__file__).resolve().parents[3]
CASCADE = {"classifier": "cascade"}


def _policies(sections: dict[str, dict[str, object]], models: ModerationModels) -> ModerationPolicies:
    configs = {name: ModerationConfig.model_validate(section) for name, section in sections.items()}
    return ModerationPolicies(None, configs, {}, models)


def test_the_cascade_is_built_once_and_only_when_a_policy_names_it() -> None:
    builds = Builds()
    models = ModerationModels(KeywordScorer({}), cascade=builds)
    _policies({"a": {}, "b": {"output": {"mode": "buffered"}}}, models)
    assert builds.calls == 0 and not models.cascade_loaded
    policies = _policies({"a": {}, "b": CASCADE, "c": {**CASCADE, "input": None}}, models)
    _policies({"d": CASCADE}, models)  # a reload: the process's cascade is reused
    assert builds.calls == 1 and models.cascade_loaded
    cascade, plain = policies.for_request("", "b"), policies.for_request("", "a")
    assert cascade is not None and plain is not None
    assert cascade.check_text("I will hurt you.", "output").blocked is not None
    assert plain.check_text("I will hurt you.", "output").blocked is None
    assert off_loop(cascade) and not off_loop(plain)  # the encoder's milliseconds leave the event loop


def test_a_cascade_section_that_checks_no_category_loads_nothing() -> None:
    builds = Builds()
    _policies({"a": {**CASCADE, "input": {"categories": {}}, "output": None}}, ModerationModels(KeywordScorer({}), builds))
    assert builds.calls == 0


def test_a_cascade_that_cannot_load_refuses_the_policy_with_the_reason() -> None:
    with pytest.raises(ValueError, match="cascade: the moderation cascade needs tokenizers"):
        _policies({"a": CASCADE}, ModerationModels(KeywordScorer({}), cascade=Builds(fail=True)))


def test_a_policy_without_the_cascade_never_imports_the_encoder() -> None:
    # the serving process's memory bar: no onnx, tokenizers or encoder module unless asked for
    code = ("import sys; from gateway.moderation import ModerationPolicies; from policies.moderation import "
            "ModerationClassifier, ModerationConfig; from policies.moderation.scorers import ModerationModels; "
            "p = ModerationPolicies(ModerationConfig(), {}, {}, ModerationModels(ModerationClassifier.load())); "
            "print(p.for_request('t', 'm').check_text('hello there', 'output').text); "
            "print([m for m in ('onnx', 'tokenizers', 'policies.moderation.encoder', "
            "'policies.moderation.cascade') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.splitlines() == ["hello there", "[]"]


def _chunk(text: str, finish: str | None = None) -> ChatChunk:
    return ChatChunk(id="c", created=0, model="m", choices=[ChunkChoice(index=0, delta=Delta(content=text),
                                                                      finish_reason=finish)])


def test_a_cascade_stream_goes_to_a_thread_only_for_chunks_that_can_end_a_window() -> None:
    policies = _policies({"a": {}, "b": CASCADE}, ModerationModels(KeywordScorer({}), cascade=Builds()))
    record = RequestRecord(Telemetry(None, AccessLog(io.StringIO())), "chat.completions", {}, "r", "openai")
    cascade, plain = policies.for_request("", "b"), policies.for_request("", "a")
    assert cascade is not None and plain is not None
    text = ("Here is the plan. We roll out one replica first, then watch the error rate for ten minutes, "
            "and only then scale the rest of the pool up to its full size so that every user sees it by tonight")
    words = [" " + w for w in text.split()]
    guard = StreamGuard(cascade, record)
    hops = [guard.needs_thread(_chunk(w)) for w in words]
    assert hops[words.index(" plan.")] and hops[words.index(" We")]  # the sentence end, and the space that cuts
    assert sum(hops) <= len(words) // 4  # most chunks stay inline: a thread hop costs more than their checks
    assert sum(hops[words.index(" We") + 1:]) >= 2  # 170 characters with no sentence end: every ~64
    assert guard.needs_thread(_chunk("", finish="stop"))  # the rest and the tool arguments are checked at the end
    plain_guard = StreamGuard(plain, record)
    assert not any(plain_guard.needs_thread(_chunk(w)) for w in words)
