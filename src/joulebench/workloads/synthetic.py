"""Synthetic study-like prompt sets built from the bundled chat corpus.

``paper`` mirrors the study's prompts: multi-turn chat conversations ending in a polite "thank
you" user turn, 200–4,000 prompt tokens with mean ≈ 1,200 and reference answers of 10–300 tokens.
``quick`` has the same shape but is short, for CPU runs. Lengths are measured in the *target*
tokenizer after its chat template, so the set must be built for that tokenizer; the text is real
English from the corpus, never random token ids. Everything is deterministic by seed.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from dataclasses import dataclass
from functools import cache
from typing import Any

from joulebench.errors import ConfigError, UnknownName
from joulebench.workloads.corpus import THANKS, Exchange, load_corpus
from joulebench.workloads.prompt_set import Prompt, PromptSet, chat_input_ids, count_tokens

log = logging.getLogger(__name__)

BUNDLED_TOKENIZER_NOTE = "joulebench bundled tokenizer (no target tokenizer was given)"


_GRID = [statistics.NormalDist().inv_cdf((i + 0.5) / 2000) for i in range(2000)]


def _truncated_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """Mean of log-normal(mu, sigma) conditioned on [lo, hi] (deterministic quadrature)."""
    kept = [v for v in (math.exp(mu + sigma * z) for z in _GRID) if lo <= v <= hi]
    return statistics.fmean(kept) if kept else (lo if mu < math.log(lo) else hi)


@cache
def _solve_mu(mean: float, sigma: float, lo: float, hi: float) -> float:
    """The log-normal location whose truncation to [lo, hi] has the wanted mean (bisection)."""
    a, b = math.log(lo) - 3 * sigma, math.log(hi) + 3 * sigma
    for _ in range(60):
        mid = (a + b) / 2
        if _truncated_mean(mid, sigma, lo, hi) < mean:
            a = mid
        else:
            b = mid
    return (a + b) / 2


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """A truncated log-normal length in tokens of the target tokenizer: within [lo, hi], with
    the wanted mean and log-space spread ``sigma``."""

    lo: int
    hi: int
    mean: float
    sigma: float

    def draw(self, rng: random.Random) -> int:
        """One length, by rejection from the log-normal whose truncation has the wanted mean."""
        mu = _solve_mu(self.mean, self.sigma, float(self.lo), float(self.hi))
        while True:
            value = rng.lognormvariate(mu, self.sigma)
            if self.lo <= value <= self.hi:
                return round(value)


@dataclass(frozen=True, slots=True)
class SyntheticProfile:
    """Target distributions of a prompt set: prompt (input) and reference answer (output)."""

    name: str
    input_tokens: LengthDistribution
    output_tokens: LengthDistribution
    default_n: int


PROFILES: dict[str, SyntheticProfile] = {
    "paper": SyntheticProfile(
        "paper",
        input_tokens=LengthDistribution(200, 4000, 1200.0, 0.7),
        output_tokens=LengthDistribution(10, 300, 110.0, 0.8),
        default_n=10_000,
    ),
    "quick": SyntheticProfile(
        "quick",
        input_tokens=LengthDistribution(40, 160, 80.0, 0.4),
        output_tokens=LengthDistribution(4, 24, 12.0, 0.5),
        default_n=32,
    ),
}


class _Builder:
    """Assembles conversations of a target token length for one tokenizer (counts cached)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lengths: dict[str, int] = {}
        probe_u, probe_a = "Hello there.", "Hi! How can I help?"
        chat = [{"role": "user", "content": probe_u}, {"role": "assistant", "content": probe_a}]
        one = len(chat_input_ids(tokenizer, chat[:1]))
        two = len(chat_input_ids(tokenizer, chat))
        three = len(chat_input_ids(tokenizer, [*chat, chat[0]]))
        # base: a one-message chat's template cost (system prompt, generation prompt included);
        # then each further message costs its role's overhead plus its content.
        self.base = one - self.length(probe_u)
        self.per_role = {
            "assistant": max(1, two - one - self.length(probe_a)),
            "user": max(1, three - two - self.length(probe_u)),
        }

    def length(self, text: str) -> int:
        if text not in self._lengths:
            self._lengths[text] = count_tokens(self.tokenizer, text)
        return self._lengths[text]

    def estimate(self, messages: list[dict[str, str]]) -> int:
        """Templated length: template costs plus content tokens (special tokens split the text,
        so this matches the exact count up to rare merges across a role/content boundary)."""
        content = sum(self.length(m["content"]) for m in messages)
        overhead = sum(self.per_role[m["role"]] for m in messages[1:])
        return self.base + overhead + content

    def truncate(self, text: str, n_tokens: int) -> str:
        """At most about ``n_tokens`` of ``text``, cut at a word boundary."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: max(1, n_tokens)]
        cut = self.tokenizer.decode(ids, skip_special_tokens=True)
        if len(ids) < self.length(text) and " " in cut.strip():
            cut = cut[: cut.rstrip().rfind(" ")]
        return cut.strip() or text.split()[0]

    def conversation(
        self, rng: random.Random, target_tokens: int, stream: list[Exchange]
    ) -> tuple[list[dict[str, str]], int]:
        """Messages whose exact templated length is close to ``target_tokens``, and that length."""
        thanks = rng.choice(THANKS)
        budget = target_tokens - self.base - self.length(thanks)
        messages: list[dict[str, str]] = []
        used = 0
        last: tuple[Exchange, int, int] | None = None  # the truncated exchange, if any
        for ex in stream:
            cost_u = self.per_role["user"] + self.length(ex.user)
            cost_a = self.per_role["assistant"] + self.length(ex.assistant)
            if used + cost_u + cost_a <= budget:
                messages += [
                    {"role": "user", "content": ex.user},
                    {"role": "assistant", "content": ex.assistant},
                ]
                used += cost_u + cost_a
                continue
            room = budget - used - self.per_role["user"] - self.per_role["assistant"]
            if room >= 2 or not messages:
                keep_u = min(self.length(ex.user), max(1, room // 3))
                last = (ex, keep_u, max(1, room - keep_u))
            break
        closing = {"role": "user", "content": thanks}
        if last is None:
            final = [*messages, closing]
            return final, self.estimate(final)
        # Truncation cuts at word boundaries: measure exactly and let the answer grow to fit.
        ex, keep_u, keep_a = last
        user = {"role": "user", "content": self.truncate(ex.user, keep_u)}
        answer = {"role": "assistant", "content": self.truncate(ex.assistant, keep_a)}
        best = [*messages, user, answer, closing]
        best_tokens = self.estimate(best)
        for _ in range(3):
            gap = target_tokens - best_tokens
            if gap <= 0 or keep_a >= self.length(ex.assistant):
                break
            keep_a += gap
            answer = {"role": "assistant", "content": self.truncate(ex.assistant, keep_a)}
            candidate = [*messages, user, answer, closing]
            n_tokens = self.estimate(candidate)
            if n_tokens > target_tokens:
                break
            best, best_tokens = candidate, n_tokens
        return best, best_tokens


def _exchange_stream(rng: random.Random) -> list[Exchange]:
    """Whole conversations in a seeded order: each chat follows one topic as long as it lasts."""
    conversations = list(load_corpus())
    rng.shuffle(conversations)
    return [ex for conv in conversations for ex in conv.exchanges]


def synthetic_prompts(
    name: str, *, n: int | None = None, seed: int = 0, tokenizer: Any = None
) -> PromptSet:
    """The ``paper`` or ``quick`` set, with lengths measured in ``tokenizer``."""
    if name not in PROFILES:
        raise UnknownName("synthetic prompt set", name, list(PROFILES))
    profile = PROFILES[name]
    tokenizer_name = getattr(tokenizer, "name_or_path", None)
    if tokenizer is None:
        # No target tokenizer (e.g. a load test against a remote server): the lengths are then
        # those of the bundled tokenizer, and the set's source says so.
        from joulebench.workloads.models import load_tokenizer

        tokenizer = load_tokenizer("tiny")
        tokenizer_name = BUNDLED_TOKENIZER_NOTE
        log.warning(
            "prompt set '%s' sized with joulebench's bundled tokenizer: pass the target model's "
            "tokenizer for lengths in its tokens",
            name,
        )
    count = profile.default_n if n is None else n
    if count < 1:
        raise ConfigError(f"n must be at least 1, got {count}")
    rng = random.Random(f"joulebench-{name}-{seed}")
    builder = _Builder(tokenizer)
    prompts = []
    for i in range(count):
        target = profile.input_tokens.draw(rng)
        reference = profile.output_tokens.draw(rng)
        messages, _ = builder.conversation(rng, target, _exchange_stream(rng))
        prompts.append(Prompt(f"{name}-{seed}-{i:05d}", messages, reference))
    source = {
        "kind": "synthetic",
        "profile": name,
        "seed": seed,
        "n": count,
        "tokenizer": tokenizer_name,
        "input_tokens_range": [profile.input_tokens.lo, profile.input_tokens.hi],
        "input_tokens_target_mean": profile.input_tokens.mean,
        "output_tokens_range": [profile.output_tokens.lo, profile.output_tokens.hi],
        "output_tokens_target_mean": profile.output_tokens.mean,
        "corpus": "joulebench bundled chat corpus",
    }
    return PromptSet(name, prompts, source)
