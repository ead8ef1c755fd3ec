"""Generation settings (validated once, up front) and the token choice of one step.

The choice follows Hugging Face generate's order of logits warpers — temperature, then top-k,
then top-p — so a seed here and a seed there mean the same distribution, if not the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate. Every field is checked in `__post_init__`.

    Attributes:
        max_new_tokens: tokens to generate at most (≥ 1).
        stop: strings that end generation; the text ends before the first one found (each
            non-empty; a single string is one stop string).
        temperature: 0 (default) is greedy; above 0 samples from softmax(logits / temperature).
        top_k: sample among the k most likely tokens (≥ 1; default None: all).
        top_p: sample from the smallest set whose probability reaches top_p, in (0, 1]
            (default None: no cut).
        seed: seed of the sampler's numpy Generator (≥ 0); the same seed and inputs give the
            same tokens (default None: fresh entropy).
        num_beams: beam search with this many beams when > 1 (default 1).
        length_penalty: beam scores are sum(log p) / generated_length ** length_penalty, as in
            Hugging Face (default 1.0).
        min_new_tokens: end-of-sequence tokens are masked out until this many tokens are
            generated, as transformers' `min_new_tokens` (default 0). Benchmarks set it equal to
            max_new_tokens so every run decodes the same number of tokens (llama-bench does too).
    """

    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer ≥ 1, got {self.max_new_tokens!r}",
                             field="max_new_tokens")
        stop = self.stop
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        elif not isinstance(stop, Sequence) or not all(isinstance(s, str) for s in stop):
            raise InputError(f"stop must be a string or a list of strings, got {stop!r}", field="stop")
        if any(s == "" for s in stop):
            raise InputError("stop contains an empty string, which would stop before any text; "
                             "each stop string must have at least one character", field="stop")
        object.__setattr__(self, "stop", tuple(dict.fromkeys(stop)))
        if not _is_number(self.temperature) or not self.temperature >= 0 or math.isinf(self.temperature):
            raise InputError(f"temperature must be a finite number ≥ 0 (0 is greedy), got "
                             f"{self.temperature!r}", field="temperature")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise InputError(f"top_k must be an integer ≥ 1 or None, got {self.top_k!r}", field="top_k")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1] or None, got {self.top_p!r}", field="top_p")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise InputError(f"seed must be an integer ≥ 0 or None, got {self.seed!r}", field="seed")
        if not _is_int(self.num_beams) or self.num_beams < 1:
            raise InputError(f"num_beams must be an integer ≥ 1, got {self.num_beams!r}",
                             field="num_beams")
        if not _is_number(self.length_penalty) or not math.isfinite(self.length_penalty):
            raise InputError(f"length_penalty must be a finite number, got {self.length_penalty!r}",
                             field="length_penalty")
        if not _is_int(self.min_new_tokens) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError(f"min_new_tokens must be an integer from 0 to max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens!r}", field="min_new_tokens")
        if self.min_new_tokens and self.num_beams > 1:
            raise InputError("min_new_tokens applies to greedy and sampled generation, not to beam search",
                             field="min_new_tokens")
        if self.num_beams > 1 and self.temperature > 0:
            raise InputError(f"num_beams={self.num_beams} with temperature={self.temperature}: beam "
                             "search here is deterministic; use temperature=0 with beams, or "
                             "num_beams=1 to sample", field="num_beams")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


def row_generator(seed: int | None, row: int) -> np.random.Generator:
    """The sampler of row `row` of a batch: its own stream, (seed, row).

    A row's draws then do not depend on its batch-mates (how many there are, when they
    finish), and row 0 draws what a single prompt with the same seed draws.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(row,)))


def choose(logits: np.ndarray, options: GenerationOptions, rng: np.random.Generator) -> int:
    """The next token of one row: argmax when greedy, else a draw after the warpers.

    Args:
        logits: float `[vocab]`; tokens a grammar forbids are already -inf. Not modified.
        options: temperature, top_k, top_p.
        rng: the generation's Generator; one uniform draw per sampled token.
    """
    if not options.sampling:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / options.temperature
    if options.top_k is not None and options.top_k < scores.shape[0]:
        kth = np.partition(scores, -options.top_k)[-options.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if options.top_p is not None and options.top_p < 1.0:
        order = np.argsort(scores, kind="stable")  # ascending, as Hugging Face's TopPLogitsWarper
        probs = _softmax(scores[order])
        # Drop the low tail whose mass is at most 1 - top_p; the most likely token always stays.
        drop = np.cumsum(probs) <= 1.0 - options.top_p
        drop[-1] = False
        scores[order[drop]] = -np.inf
    probs = _softmax(scores)
    cdf = np.cumsum(probs)
    # The first index whose cumulative mass exceeds the draw: always a token of non-zero
    # probability, since the draw is below the total.
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - np.max(scores))
    return shifted / shifted.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float32 as the beams' scores are kept."""
    logits = logits.astype(np.float32, copy=False)
    peak = np.max(logits, axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
