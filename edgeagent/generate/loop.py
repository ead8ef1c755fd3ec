"""The one generation loop: greedy, sampling and beam search over any backend's Session.

Every model call goes through `KVCache.step` (so through `Session.run`); tokenization, chat
templates and the stopping rules come from the IR folder's files. A grammar (llguidance)
masks each step's logits, and the tokens it forces are appended without sampling and fed to
the model together with the sampled one, in one multi-token step.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..backend import Session
from ..errors import InputError
from .assets import DecoderAssets
from .decoder import Decoder, load_decoder
from .errors import PromptTooLong
from .grammar import Constraint, Grammar
from .options import GenerationOptions, choose, log_softmax, row_generator

ModelSource = Decoder | Session | Artifact | str | os.PathLike


class StopReason(enum.StrEnum):
    """Why a generation ended."""

    EOS = "eos"                            # the model produced an end-of-sequence token
    STOP_STRING = "stop_string"            # the text reached one of `stop`
    MAX_NEW_TOKENS = "max_new_tokens"      # the token budget ran out
    MAX_LENGTH = "max_length"              # the model's positions ran out
    GRAMMAR_COMPLETE = "grammar_complete"  # the grammar is satisfied and allows nothing more


COMPLETE = frozenset({StopReason.EOS, StopReason.STOP_STRING, StopReason.GRAMMAR_COMPLETE})


@dataclass(frozen=True)
class GenerationTimings:
    """Where one generation's time went. Seconds come from `time.perf_counter`.

    In a batch, the seconds are the batch's (one model call serves every row) and the token
    counts are the row's.

    Attributes:
        prefill_seconds: the prompt's model call.
        prefill_tokens: tokens in that call (the prompt, plus tokens a grammar forced first).
        decode_seconds: from the first sampled token to the end.
        decode_tokens: tokens generated after the first sampled one.
        time_to_first_token_seconds: from the call (tokenization included) to the first
            sampled token.
        total_seconds: from the call to the end.
        model_steps: model calls, prefill included.
        fast_forward_tokens: tokens a grammar forced, appended without sampling.
        steps_saved: model calls fast-forwarding saved (tokens generated minus model calls:
            without it, each token costs one call).
        mask_seconds: computing grammar masks and forced tokens.
    """

    prefill_seconds: float
    prefill_tokens: int
    decode_seconds: float
    decode_tokens: int
    time_to_first_token_seconds: float
    total_seconds: float
    model_steps: int
    fast_forward_tokens: int = 0
    steps_saved: int = 0
    mask_seconds: float = 0.0

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds > 0 else float("nan")

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    def to_json(self) -> dict[str, float | int]:
        return {"prefill_seconds": self.prefill_seconds, "prefill_tokens": self.prefill_tokens,
                "decode_seconds": self.decode_seconds, "decode_tokens": self.decode_tokens,
                "time_to_first_token_seconds": self.time_to_first_token_seconds,
                "total_seconds": self.total_seconds, "model_steps": self.model_steps,
                "fast_forward_tokens": self.fast_forward_tokens, "steps_saved": self.steps_saved,
                "mask_seconds": self.mask_seconds,
                "prefill_tokens_per_second": self.prefill_tokens_per_second,
                "decode_tokens_per_second": self.decode_tokens_per_second}


@dataclass(frozen=True)
class GenerationResult:
    """One prompt's generation.

    Attributes:
        text: the generated text, special tokens left out; with a stop string it ends just
            before the stop string.
        token_ids: every generated token, an end-of-sequence token included (as Hugging Face
            returns it) and the token that completed a stop string included.
        stop_reason: why it ended.
        prompt_tokens: the prompt's length in tokens.
        timings: per-phase times and counts.
        score: beam search's length-normalised log-probability (None otherwise).
    """

    text: str
    token_ids: tuple[int, ...]
    stop_reason: StopReason
    prompt_tokens: int
    timings: GenerationTimings
    score: float | None = None

    @property
    def complete(self) -> bool:
        """Ended on its own (EOS, a stop string, a finished grammar), not on a budget."""
        return self.stop_reason in COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "token_ids": list(self.token_ids),
                "stop_reason": str(self.stop_reason), "prompt_tokens": self.prompt_tokens,
                "score": self.score, "timings": self.timings.to_json()}


@dataclass(frozen=True)
class Chunk:
    """What one step added to one row, as `stream` yields it.

    Attributes:
        index: the row (0 for a single prompt).
        token_ids: the tokens added (one sampled token and any it forced, or a forced prefix).
        text: the text that became final with them (text that may still turn out to begin a
            stop string is held back until it cannot).
        fast_forwarded: how many of token_ids a grammar forced.
        stop_reason: set on the row's last chunk.
    """

    index: int
    token_ids: tuple[int, ...]
    text: str
    fast_forwarded: int = 0
    stop_reason: StopReason | None = None


# -- prompts -------------------------------------------------------------------------------------


def _is_messages(value: Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(isinstance(m, Mapping) for m in value))


def _is_token_ids(value: Any) -> bool:
    """Token ids given directly: a list, tuple or 1-D array of integers."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.size > 0 and np.issubdtype(value.dtype, np.integer)
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value))


def _encode_prompts(assets: DecoderAssets, prompt: Any, tools: Sequence[Mapping[str, Any]] | None,
                    add_generation_prompt: bool, vocab: int | None = None) -> tuple[list[list[int]], bool]:
    """Token ids of each prompt, and whether a batch was given."""

    def one(item: Any, where: str) -> list[int]:
        if _is_token_ids(item):  # already tokenized: used as given, no template, no special tokens
            ids = [int(t) for t in item]
            bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
            if bad:
                raise InputError(f"{where} holds token ids outside the vocabulary [0, {vocab}): {bad[:5]}",
                                 field="prompt")
            return ids
        if isinstance(item, str):
            if tools is not None:
                raise InputError("tools are declared to the model through its chat template, which "
                                 "takes messages; pass [{'role': 'user', 'content': ...}] instead of "
                                 "a string", field="tools")
            # A plain prompt gets the tokenizer's own special tokens (BOS for Llama), as
            # `tokenizer(prompt)` does in transformers.
            return assets.encode(item, add_special_tokens=True)
        if _is_messages(item):
            text = assets.render_chat(item, tools=tools, add_generation_prompt=add_generation_prompt)
            # The template writes every special token itself, as apply_chat_template assumes.
            return assets.encode(text, add_special_tokens=False)
        raise InputError(f"{where} must be a string, a list of {{'role', 'content'}} messages or token ids, got "
                         f"{type(item).__name__}", field="prompt")

    if isinstance(prompt, str) or _is_messages(prompt) or _is_token_ids(prompt):
        prompts, batch = [one(prompt, "the prompt")], False
    elif isinstance(prompt, Sequence) and len(prompt) > 0:
        prompts, batch = [one(p, f"prompt {i}") for i, p in enumerate(prompt)], True
    else:
        raise InputError("the prompt must be a string, a list of messages, or a non-empty list of "
                         f"those (a batch); got {prompt!r}"[:300], field="prompt")
    for i, ids in enumerate(prompts):
        if not ids:
            raise InputError(f"{'prompt ' + str(i) if batch else 'the prompt'} is empty after "
                             "tokenization; the model needs at least one token", field="prompt")
    return prompts, batch


def _check_lengths(prompts: list[list[int]], max_length: int | None, batch: bool) -> None:
    if max_length is None:
        return
    for i, ids in enumerate(prompts):
        if len(ids) >= max_length:
            raise PromptTooLong(len(ids), max_length, row=i if batch else None)


# -- one row of the sampling loop -----------------------------------------------------------------


class _Row:
    """A prompt's progress: tokens, streamed text, stop-string state, its grammar."""

    def __init__(self, index: int, prompt: list[int], assets: DecoderAssets, options: GenerationOptions,
                 constraint: Constraint | None) -> None:
        from tokenizers.decoders import DecodeStream

        self.index = index
        self.prompt = prompt
        self.constraint = constraint
        self.generated: list[int] = []
        self.pending: list[int] = []   # tokens the next model step feeds for this row
        self.forced = 0
        self.prefix_forced = 0         # forced before the first model call, fed with the prompt
        self.steps = 0
        self.reason: StopReason | None = None
        self.first_sample: float | None = None
        self.end: float | None = None
        self._assets = assets
        self._eos = frozenset(assets.eos_token_ids)
        self._stops = options.stop
        self._longest_stop = max((len(s) for s in options.stop), default=0)
        # The library's incremental detokenizer: it holds back bytes of a character split
        # across tokens, so the streamed pieces concatenate to the decoded text.
        self._decoder = DecodeStream(skip_special_tokens=True)
        self._text = ""
        self._cut: int | None = None  # where a stop string begins in _text
        self._emitted = 0

    def add(self, tokens: list[int], forced: int) -> None:
        before = len(self._text)
        for token in tokens:
            self.generated.append(token)
            if token in self._eos:
                continue  # never part of the text; the reason is set by the caller
            piece = self._decoder.step(self._assets.tokenizer, token)
            if piece:
                self._text += piece
        self.forced += forced
        self._find_stop(before)

    def _find_stop(self, before: int) -> None:
        """Look for a stop string in text added after position `before`."""
        if self._stops and self._cut is None and len(self._text) > before:
            start = max(0, before - self._longest_stop + 1)
            hits = [i for s in self._stops if (i := self._text.find(s, start)) >= 0]
            if hits:
                self._cut = min(hits)

    def finish(self) -> None:
        """End the row: note the time, and add the bytes the stream still holds.

        The incremental detokenizer keeps an incomplete UTF-8 tail until a later token
        completes it; at the end nothing will, so the text takes what a full decode shows for
        it (replacement characters), and equals `decode(token_ids)` without a stop string.
        """
        self.end = time.perf_counter()
        if self._cut is not None:
            return
        full = self._assets.decode(self.generated)
        if len(full) > len(self._text) and full.startswith(self._text):
            before, self._text = len(self._text), full
            self._find_stop(before)
            if self._cut is not None:  # the tail completed a stop string after all
                self.reason = StopReason.STOP_STRING

    @property
    def stop_found(self) -> bool:
        return self._cut is not None

    def text(self) -> str:
        return self._text if self._cut is None else self._text[:self._cut]

    def flush(self) -> str:
        """The text that became final since the last call."""
        if self.reason is not None or not self._stops:
            visible = len(self.text())
        else:
            visible = len(self._text) - self._held_back()
        piece = self._text[self._emitted:visible] if visible > self._emitted else ""
        self._emitted = max(self._emitted, visible)
        return piece

    def _held_back(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        for n in range(min(self._longest_stop - 1, len(self._text)), 0, -1):
            tail = self._text[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0

    def settle(self, budget: int, max_length: int | None) -> None:
        """Set the stop reason if this row is done."""
        if self.reason is not None:
            return
        if self.stop_found:
            self.reason = StopReason.STOP_STRING
        elif self.constraint is not None and self.constraint.stopped:
            self.reason = StopReason.GRAMMAR_COMPLETE
        elif len(self.generated) >= budget:
            self.reason = StopReason.MAX_NEW_TOKENS
        elif max_length is not None and len(self.prompt) + len(self.generated) >= max_length:
            self.reason = StopReason.MAX_LENGTH

    def room(self, budget: int, max_length: int | None) -> int:
        """Tokens this row may still add."""
        left = budget - len(self.generated)
        if max_length is not None:
            left = min(left, max_length - len(self.prompt) - len(self.generated))
        return left

    def result(self, start: float, prefill_seconds: float) -> GenerationResult:
        end = self.end if self.end is not None else time.perf_counter()
        first = self.first_sample
        sampled_tokens = len(self.generated) - self.prefix_forced
        timings = GenerationTimings(
            prefill_seconds=prefill_seconds,
            prefill_tokens=len(self.prompt) + self.prefix_forced if self.steps else 0,
            decode_seconds=0.0 if first is None else end - first,
            decode_tokens=max(sampled_tokens - 1, 0),
            time_to_first_token_seconds=(end if first is None else first) - start,
            total_seconds=end - start,
            model_steps=self.steps,
            fast_forward_tokens=self.forced,
            steps_saved=max(len(self.generated) - self.steps, 0),
            mask_seconds=0.0 if self.constraint is None else self.constraint.mask_seconds)
        return GenerationResult(self.text(), tuple(self.generated), self.reason or StopReason.MAX_NEW_TOKENS,
                                len(self.prompt), timings)


def _sample_rows(decoder: Decoder, prompts: list[list[int]], options: GenerationOptions,
                 grammar: Grammar | None, start: float, results: list) -> Iterator[Chunk]:
    """Greedy or sampled generation of a batch; yields chunks, fills `results` at the end."""
    assets = decoder.assets
    budget, max_length = options.max_new_tokens, decoder.max_length
    vocab = decoder.vocab_size()
    rngs = [row_generator(options.seed, i) for i in range(len(prompts))]
    eos = frozenset(assets.eos_token_ids)
    eos_ids = np.array(sorted(t for t in eos if 0 <= t < vocab), np.int64)
    rows = []
    for i, prompt in enumerate(prompts):
        constraint = None if grammar is None else Constraint(grammar, decoder.ll_tokenizer(), vocab)
        rows.append(_Row(i, prompt, assets, options, constraint))

    # Tokens a grammar forces before anything is sampled join the prompt in the prefill.
    for row in rows:
        if row.constraint is not None:
            prefix = row.constraint.forced(row.room(budget, max_length))
            if prefix:
                row.add(prefix, forced=len(prefix))
                row.prefix_forced = len(prefix)
                row.settle(budget, max_length)
                if row.reason is not None:
                    row.finish()
                yield Chunk(row.index, tuple(prefix), row.flush(), len(prefix), row.reason)

    active = [row for row in rows if row.reason is None]
    prefill_seconds = 0.0
    if active:
        width = max(len(r.prompt) + len(r.generated) for r in active)
        tokens = np.full((len(active), width), assets.pad_token_id, np.int64)
        valid = np.zeros((len(active), width), bool)
        for i, row in enumerate(active):  # left padding, as the contract prescribes
            ids = row.prompt + row.generated
            tokens[i, width - len(ids):] = ids
            valid[i, width - len(ids):] = True
        cache = decoder.new_cache(len(active))
        t0 = time.perf_counter()
        logits = cache.step(tokens, valid)
        prefill_seconds = time.perf_counter() - t0
        last = logits[:, -1, :]
        for row in active:
            row.steps += 1

    while active:
        for i, row in enumerate(active):
            scores = np.array(last[i], dtype=np.float32)  # a copy: masks write into it
            if row.constraint is not None:
                row.constraint.apply(scores)
            if len(row.generated) < options.min_new_tokens and eos_ids.size:
                scores[eos_ids] = -np.inf
            token = choose(scores, options, rngs[row.index])
            if row.first_sample is None:
                row.first_sample = time.perf_counter()
            forced: list[int] = []
            if row.constraint is not None:
                row.constraint.consume(token)
            if token in eos:
                row.add([token], forced=0)
                row.reason = (StopReason.GRAMMAR_COMPLETE if row.constraint is not None
                              else StopReason.EOS)
            else:
                if row.constraint is not None:
                    forced = row.constraint.forced(row.room(budget, max_length) - 1)
                row.add([token, *forced], forced=len(forced))
                row.settle(budget, max_length)
            row.pending = [token, *forced]
            if row.reason is not None:
                row.finish()
            yield Chunk(row.index, (token, *forced), row.flush(), len(forced), row.reason)
        keep = [i for i, row in enumerate(active) if row.reason is None]
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch instead of computing on
            cache.select(keep)
            active = [active[i] for i in keep]
        width = max(len(row.pending) for row in active)
        tokens = np.full((len(active), width), assets.pad_token_id, np.int64)
        valid = np.zeros((len(active), width), bool)
        for i, row in enumerate(active):
            tokens[i, :len(row.pending)] = row.pending
            valid[i, :len(row.pending)] = True
            row.steps += 1
        logits = cache.step(tokens, valid)
        last = logits[np.arange(len(active)), [len(row.pending) - 1 for row in active], :]

    results.extend(row.result(start, prefill_seconds) for row in rows)


# -- beam search ----------------------------------------------------------------------------------


def _beam_search(decoder: Decoder, prompt: list[int], options: GenerationOptions,
                 start: float) -> GenerationResult:
    """Beam search as Hugging Face's `_beam_search` does it (early_stopping=False).

    At each step the top (max(2, 1 + #eos) × beams) continuations over all beams are taken;
    those among the best `beams` that end (EOS, a stop string, the length budget) become
    finished hypotheses scored sum(log p) / generated_length ** length_penalty; the best
    unfinished ones run on. Search stops when no running beam can beat the worst of `beams`
    finished hypotheses (the heuristic that uses the current length), or nothing can go on.
    """
    assets = decoder.assets
    beams, penalty = options.num_beams, options.length_penalty
    eos = frozenset(assets.eos_token_ids)
    budget = options.max_new_tokens
    if decoder.max_length is not None:
        budget = min(budget, decoder.max_length - len(prompt))
    keep = max(2, 1 + len(eos)) * beams

    cache = decoder.new_cache(1)
    t0 = time.perf_counter()
    logits = cache.step(np.asarray([prompt], np.int64))
    prefill_seconds = time.perf_counter() - t0
    first_token: float | None = None
    steps = 1
    cache.select([0] * beams)  # every beam starts from the one prompt's cache
    log_probs = np.repeat(log_softmax(logits[:, -1, :]), beams, axis=0)
    vocab = log_probs.shape[-1]
    running: list[list[int]] = [[] for _ in range(beams)]
    running_scores = np.full(beams, -1e9, np.float32)
    running_scores[0] = 0.0  # only the first beam counts until the beams diverge
    finished: list[tuple[float, list[int], StopReason]] = []
    improvable = True
    length = 0

    def ends(tokens: list[int]) -> StopReason | None:
        if tokens[-1] in eos:
            return StopReason.EOS
        if options.stop:
            text = assets.decode(tokens)
            if any(s in text for s in options.stop):
                return StopReason.STOP_STRING
        if len(tokens) >= budget:
            return (StopReason.MAX_NEW_TOKENS if budget == options.max_new_tokens
                    else StopReason.MAX_LENGTH)
        return None

    while True:
        totals = (log_probs + running_scores[:, None]).reshape(-1)
        top = np.argpartition(-totals, keep - 1)[:keep]
        top = top[np.argsort(-totals[top], kind="stable")]
        top_scores = totals[top]
        source, token = top // vocab, top % vocab
        candidates = [running[b] + [int(t)] for b, t in zip(source, token)]
        reasons = [ends(c) for c in candidates]
        if first_token is None:
            first_token = time.perf_counter()
        hits = np.array([r is not None for r in reasons])
        if improvable:
            normalised = top_scores / float(length + 1) ** penalty
            for j in range(beams):  # only the best `beams` candidates may finish
                if hits[j]:
                    finished.append((float(normalised[j]), candidates[j], reasons[j]))
            finished = sorted(finished, key=lambda f: -f[0])[:beams]
        alive = top_scores - hits.astype(np.float32) * 1e9
        order = np.argsort(-alive, kind="stable")[:beams]
        running = [candidates[o] for o in order]
        running_scores = alive[order].astype(np.float32)
        length += 1
        if improvable and len(finished) == beams:
            best_running = running_scores[0] / float(length) ** penalty
            improvable = bool(best_running > finished[-1][0])
        if not improvable or hits.all():
            break
        cache.select(source[order])
        logits = cache.step(np.asarray([[c[-1]] for c in running], np.int64))
        steps += 1
        log_probs = log_softmax(logits[:, -1, :])

    end = time.perf_counter()
    if finished:
        score, tokens, reason = finished[0]
    else:  # cannot happen with a finite budget; kept so a result always exists
        score, tokens, reason = float(running_scores[0]), running[0], StopReason.MAX_NEW_TOKENS
    text = assets.decode(tokens)
    if reason is StopReason.STOP_STRING:
        text = text[:min(i for s in options.stop if (i := text.find(s)) >= 0)]
    timings = GenerationTimings(
        prefill_seconds=prefill_seconds, prefill_tokens=len(prompt),
        decode_seconds=end - (first_token or end), decode_tokens=max(len(tokens) - 1, 0),
        time_to_first_token_seconds=(first_token or end) - start, total_seconds=end - start,
        model_steps=steps)
    return GenerationResult(text, tuple(tokens), reason, len(prompt), timings, score=score)


# -- public API -----------------------------------------------------------------------------------


def _tool_declarations(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    from .tools import ToolRegistry

    registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
    return registry.declarations()


class GenerationStream:
    """Chunks as they are produced; `result` (or `results`, for a batch) once exhausted.

    Closing it (or leaving a `with` block) stops the generation and, when it opened the model
    itself, closes the model.
    """

    def __init__(self, chunks: Iterator[Chunk], results: list[GenerationResult], batch: bool,
                 owned: Decoder | None) -> None:
        self._chunks = chunks
        self._results = results
        self._batch = batch
        self._owned = owned
        self._done = False

    def __iter__(self) -> Iterator[Chunk]:
        try:
            yield from self._chunks
            self._done = True
        finally:
            self.close()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def results(self) -> list[GenerationResult]:
        if not self._done:
            raise InputError("the stream has not finished: iterate over it first", field="stream")
        return list(self._results)

    @property
    def result(self) -> GenerationResult:
        if self._batch:
            raise InputError("this stream generates a batch: read .results", field="stream")
        return self.results[0]


def _prepare(model: ModelSource, prompt_or_messages: Any, options: GenerationOptions,
             grammar: Grammar | Any | None, tools: Any, assets: Any, add_generation_prompt: bool):
    from .tools import ToolRegistry

    if isinstance(grammar, ToolRegistry):
        grammar = grammar.grammar()
    if grammar is not None and not isinstance(grammar, Grammar):
        raise InputError(f"grammar must be a Grammar or a ToolRegistry, got {type(grammar).__name__}",
                         field="grammar")
    if grammar is not None and options.min_new_tokens:
        raise InputError("min_new_tokens with a grammar could forbid the only token that ends the grammar; "
                         "leave min_new_tokens at 0 when constraining", field="min_new_tokens")
    if grammar is not None and options.num_beams > 1:
        raise InputError("grammar-constrained beam search is not supported; use num_beams=1 with a "
                         "grammar", field="num_beams")
    declarations = _tool_declarations(tools)
    decoder = load_decoder(model, assets=assets)
    # Close only what this call opened: a caller's Decoder or Session stays open.
    owned = None if isinstance(model, (Decoder, Session)) else decoder
    try:
        prompts, batch = _encode_prompts(decoder.assets, prompt_or_messages, declarations,
                                         add_generation_prompt, decoder.vocab_size())
        _check_lengths(prompts, decoder.max_length, batch)
        if grammar is not None:
            grammar.check(decoder.ll_tokenizer())
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    return decoder, owned, prompts, batch, grammar


def generate(model: ModelSource, prompt_or_messages: Any, *, max_new_tokens: int,
             stop: str | Sequence[str] | None = None, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             num_beams: int = 1, length_penalty: float = 1.0, grammar: Any = None,
             tools: Any = None, assets: Any = None, add_generation_prompt: bool = True,
             min_new_tokens: int = 0) -> GenerationResult | list[GenerationResult]:
    """Generate text from a decoder on any backend.

    Args:
        model: a Decoder (`load_decoder`; reuse it across calls), a Session (with `assets`;
            a Decoder or Session passed in stays open),
            an Artifact or artifact folder, or a decoder IR folder (opened and closed here).
        prompt_or_messages: a string; a list of `{"role", "content"}` messages (rendered with
            the model's chat template); token ids (a list or 1-D array of ints, used as given);
            or a list of those, a batch (left-padded, one model call per step for all rows).
        max_new_tokens: tokens to generate at most (≥ 1).
        stop: a string or strings that end generation; the text ends before it (default None).
        temperature: 0 is greedy (default); above 0 samples.
        top_k: sample among the k most likely tokens (default None).
        top_p: nucleus sampling, in (0, 1] (default None).
        seed: sampler seed; the same seed gives the same tokens, and each row of a batch
            draws from its own stream (seed, row), independent of its batch-mates (default None).
        num_beams: beam search when > 1 (default 1); needs temperature 0, no grammar.
        length_penalty: beam score exponent on the length (default 1.0).
        grammar: a Grammar or a ToolRegistry whose calls the output must be (default None).
        tools: Tools or a ToolRegistry declared to the model through the chat template
            (messages only); this does not constrain the output — pass `grammar` too, or use
            `call_tool` (default None).
        assets: the folder with tokenizer.json and the configs, when `model` is a Session or an
            artifact that lacks them (default None).
        add_generation_prompt: end a chat prompt with the assistant header (default True).
        min_new_tokens: mask end-of-sequence until this many tokens are out (default 0).

    Returns:
        A GenerationResult, or a list of them for a batch.

    Raises:
        InputError: a setting out of range (named with its allowed range), a malformed prompt.
        PromptTooLong: a prompt with at least as many tokens as the model's positions.
        NoChatTemplate: messages for a model without a chat template.
        ToolSchemaError: an invalid tool declaration.
        ArtifactError, ModelRejected, UnsupportedModel, BackendUnavailable: opening the model.
    """
    start = time.perf_counter()
    options = GenerationOptions(max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, num_beams=num_beams,
                                length_penalty=length_penalty, min_new_tokens=min_new_tokens)
    decoder, owned, prompts, batch, grammar = _prepare(model, prompt_or_messages, options, grammar,
                                                       tools, assets, add_generation_prompt)
    try:
        if options.num_beams > 1:
            results = [_beam_search(decoder, p, options, start) for p in prompts]
        else:
            results: list[GenerationResult] = []
            for _ in _sample_rows(decoder, prompts, options, grammar, start, results):
                pass
    finally:
        if owned is not None:
            owned.close()
    return results if batch else results[0]


def stream(model: ModelSource, prompt_or_messages: Any, *, max_new_tokens: int,
           stop: str | Sequence[str] | None = None, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           grammar: Any = None, tools: Any = None, assets: Any = None,
           add_generation_prompt: bool = True, min_new_tokens: int = 0) -> GenerationStream:
    """Generate as `generate` does, yielding each step's tokens and text as they come.

    Args: as `generate` (beam search does not stream: its best beam is known only at the end).

    Returns:
        A GenerationStream: iterate it for Chunks; then `.result` (or `.results` for a batch)
        is what `generate` returns, and the chunks' texts concatenate to each result's text.

    Raises:
        As `generate`, before the first chunk.
    """
    start = time.perf_counter()
    options = GenerationOptions(max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, min_new_tokens=min_new_tokens)
    decoder, owned, prompts, batch, grammar = _prepare(model, prompt_or_messages, options, grammar,
                                                       tools, assets, add_generation_prompt)
    results: list[GenerationResult] = []
    return GenerationStream(_sample_rows(decoder, prompts, options, grammar, start, results),
                            results, batch, owned)
