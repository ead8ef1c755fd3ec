"""A generative decoder's bench cell, measured in the cell's worker process (`bench.worker`).

What it measures, per (prompt tokens × new tokens) shape of the protocol:

- time to first token (prefill plus the first sampled token) and time per output token (each
  decode step, timed between the tokens `generate.stream` hands out);
- prefill and decode tokens per second;
- the KV cache's bytes at that context length (layers × 2 × KV heads × head dim × tokens ×
  the cache's element size);

then the process's peak resident memory, and on the first repeat, against the float32
reference (the source IR, run by ONNX Runtime as `generate` runs an IR folder):

- `token_agreement`: the share of the reference's greedy tokens the candidate predicts itself
  when fed the reference's own continuation (teacher forcing: one prefill per prompt, so
  one early divergence does not decide every later position);
- `sequence_identical`: the share of prompts whose free-running greedy continuation equals the
  reference's, and `mean_common_prefix`: the share of tokens before the first divergence.

Prompts of a fixed length are real text cut to that many tokens, so the timings are those of
ordinary tokens; every run decodes exactly its new tokens (`min_new_tokens`), as llama-bench does.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Shapes of llama-bench / onnxruntime-genai's benchmark style: (prompt tokens, new tokens).
DEFAULT_SHAPES = ((32, 32), (32, 128), (128, 32), (128, 128), (512, 32), (512, 128))
HEADLINE_SHAPE = (128, 128)  # the shape whose per-token latency becomes the cell's `stats`
DEFAULT_AGREEMENT_PROMPTS = 200
DEFAULT_AGREEMENT_TOKENS = 32
AGREEMENT_BATCH = 8

from ..generate.prompts import DEFAULT_PROMPTS, PASSAGE  # noqa: E402  (re-exported for callers)


def shapes_from(protocol: Mapping[str, Any]) -> list[tuple[int, int]]:
    prompts = protocol.get("prompt_tokens") or sorted({p for p, _ in DEFAULT_SHAPES})
    new = protocol.get("new_tokens") or sorted({n for _, n in DEFAULT_SHAPES})
    return [(int(p), int(n)) for p in prompts for n in new]


def fixed_prompt(assets: Any, length: int) -> list[int]:
    """`length` token ids of ordinary prose (the passage repeated as needed), without special tokens."""
    ids = assets.encode(PASSAGE, add_special_tokens=False)
    if not ids:
        from ..errors import InputError

        raise InputError("the tokenizer encodes the prompt passage to no tokens", field="tokenizer")
    return (ids * (length // len(ids) + 1))[:length]


def kv_cache_bytes(metadata: Mapping[str, Any], tokens: int, itemsize: int = 4) -> int | None:
    """Bytes of keys and values for `tokens` positions of one sequence (None when unknown)."""
    try:
        layers, heads, dim = (int(metadata[k]) for k in ("num_layers", "num_kv_heads", "head_dim"))
    except (KeyError, TypeError, ValueError):
        return None
    return layers * 2 * heads * dim * tokens * itemsize


def _kv_itemsize(decoder: Any) -> int:
    layout = getattr(decoder, "layout", None)
    return int(np.dtype(layout.kv_dtype).itemsize) if layout is not None else 4  # stateful: f32 state


def time_shape(decoder: Any, prompt: list[int], new_tokens: int) -> tuple[dict[str, float], list[int]]:
    """One greedy run of exactly `new_tokens` tokens: phase times and each decode step's nanoseconds."""
    from ..generate import stream

    chunks = stream(decoder, prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    steps: list[int] = []
    last = None
    for _ in chunks:
        now = time.perf_counter_ns()
        if last is not None:
            steps.append(now - last)
        last = now
    t = chunks.result.timings
    return ({"ttft_s": t.time_to_first_token_seconds, "prefill_s": t.prefill_seconds,
             "prefill_tokens_per_s": t.prefill_tokens_per_second, "decode_s": t.decode_seconds,
             "decode_tokens_per_s": t.decode_tokens_per_second,
             "tpot_s": t.decode_seconds / t.decode_tokens if t.decode_tokens else float("nan"),
             "tokens": len(chunks.result.token_ids)}, steps)


def measure_shapes(decoder: Any, shapes: Sequence[tuple[int, int]], runs: int, report: Any = None
                   ) -> tuple[list[dict[str, Any]], dict[tuple[int, int], list[int]]]:
    """Each shape timed `runs` times after one warm-up run; medians per shape."""
    max_length = decoder.max_length
    metadata = decoder.assets.metadata
    itemsize = _kv_itemsize(decoder)
    rows, steps_by_shape = [], {}
    for prompt_tokens, new_tokens in shapes:
        row: dict[str, Any] = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                               "kv_cache_bytes": kv_cache_bytes(metadata, prompt_tokens + new_tokens, itemsize)}
        if max_length is not None and prompt_tokens + new_tokens > max_length:
            rows.append({**row, "skipped": f"{prompt_tokens}+{new_tokens} tokens exceed the model's "
                                           f"max_length {max_length}"})
            continue
        if report is not None:
            report.stage("timed")
        prompt = fixed_prompt(decoder.assets, prompt_tokens)
        time_shape(decoder, prompt, new_tokens)  # warm-up: allocations, thread pools, caches
        measured, steps = [], []
        for _ in range(runs):
            figures, per_step = time_shape(decoder, prompt, new_tokens)
            measured.append(figures)
            steps += per_step
        for key in ("ttft_s", "prefill_s", "prefill_tokens_per_s", "decode_s", "decode_tokens_per_s", "tpot_s"):
            row[key] = float(np.median([m[key] for m in measured]))
        row["runs"] = runs
        rows.append(row)
        steps_by_shape[(prompt_tokens, new_tokens)] = steps
    return rows, steps_by_shape


def greedy_tokens(decoder: Any, prompts: Sequence[Any], new_tokens: int) -> list[list[int]]:
    """Greedy continuations (ending at EOS or after `new_tokens`), in batches of AGREEMENT_BATCH."""
    from ..generate import generate

    out: list[list[int]] = []
    for start in range(0, len(prompts), AGREEMENT_BATCH):
        batch = list(prompts[start:start + AGREEMENT_BATCH])
        out += [list(r.token_ids) for r in generate(decoder, batch, max_new_tokens=new_tokens)]
    return out


def teacher_forced_predictions(decoder: Any, prompt_ids: Sequence[list[int]],
                               continuations: Sequence[list[int]]) -> list[list[int]]:
    """The candidate's argmax at each position of a given continuation (fed prompt + continuation[:-1])."""
    predictions: list[list[int]] = []
    pad = decoder.assets.pad_token_id
    for start in range(0, len(prompt_ids), AGREEMENT_BATCH):
        rows = [(list(p), list(c)) for p, c in zip(prompt_ids[start:start + AGREEMENT_BATCH],
                                                   continuations[start:start + AGREEMENT_BATCH])]
        sequences = [p + c[:-1] for p, c in rows]
        width = max(len(s) for s in sequences)
        tokens = np.full((len(rows), width), pad, np.int64)
        valid = np.zeros((len(rows), width), bool)
        for i, seq in enumerate(sequences):  # left padding: every row ends in the last column
            tokens[i, width - len(seq):] = seq
            valid[i, width - len(seq):] = True
        logits = np.asarray(decoder.new_cache(len(rows)).step(tokens, valid))
        for i, (_, continuation) in enumerate(rows):
            n = len(continuation)
            predictions.append([int(t) for t in logits[i, width - n:, :].argmax(-1)])
    return predictions


def agreement(reference: Sequence[list[int]], forced: Sequence[list[int]],
              free: Sequence[list[int]]) -> dict[str, Any]:
    """Token agreement (teacher-forced), identical continuations, common prefix share."""
    total = sum(len(r) for r in reference)
    matched = sum(sum(a == b for a, b in zip(r, f)) for r, f in zip(reference, forced))

    def common(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    return {"token_agreement": matched / total if total else float("nan"),
            "sequence_identical": float(np.mean([list(r) == list(f) for r, f in zip(reference, free)])),
            "mean_common_prefix": float(np.mean([common(r, f) / max(len(r), 1) for r, f in zip(reference, free)])),
            "prompts": len(reference), "reference_tokens": total}


def _prompts_digest(prompt_ids: Sequence[list[int]], new_tokens: int) -> str:
    digest = hashlib.sha256(f"{new_tokens};".encode())
    for ids in prompt_ids:
        digest.update(np.asarray(ids, np.int64).tobytes() + b";")
    return digest.hexdigest()


def reference_tokens(reference: str, prompt_ids: list[list[int]], new_tokens: int,
                     cache: Mapping[str, str] | None) -> list[list[int]]:
    """The reference's greedy continuations, computed once per model and prompt set in a run."""
    from ..generate import load_decoder

    key = {"model": (cache or {}).get("model"), "prompts": _prompts_digest(prompt_ids, new_tokens)}
    file = Path(cache["path"]) if cache else None
    if file is not None and file.is_file():
        saved = json.loads(file.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["tokens"]
    with load_decoder(reference) as ref:
        tokens = greedy_tokens(ref, prompt_ids, new_tokens)
    if file is not None:
        partial = file.with_name(f"{file.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"key": key, "tokens": tokens}), encoding="utf-8")
        os.replace(partial, file)
    return tokens


def encode_prompts(decoder: Any, prompts: Sequence[Any]) -> list[list[int]]:
    """Token ids of prompts (strings, or message lists rendered with the chat template when it has one)."""
    assets = decoder.assets
    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if assets.chat_template:
            out.append(assets.encode(assets.render_chat(prompt, add_generation_prompt=True), add_special_tokens=False))
        else:
            out.append(assets.encode(" ".join(m["content"] for m in prompt), add_special_tokens=True))
    return out


def run_measure(spec: dict[str, Any], report: Any) -> dict[str, Any]:
    """The measure stage of a decoder cell (what `bench.worker.run_measure` hands decoders to)."""
    from ..generate import load_decoder
    from .stats import latency_stats
    from .worker import _target, _workload, peak_rss_bytes

    protocol = spec["protocol"]
    result: dict[str, Any] = {}
    report.stage("load")
    start = time.perf_counter()
    decoder = load_decoder(spec["artifact_dir"], options=spec.get("load_options") or None, target=_target(spec))
    result["load_s"] = time.perf_counter() - start
    result["threads"] = getattr(decoder.session, "threads", None)

    report.stage("first_inference")
    start = time.perf_counter()
    time_shape(decoder, fixed_prompt(decoder.assets, 8), 2)
    result["first_inference_s"] = time.perf_counter() - start

    shapes = shapes_from(protocol)
    rows, steps = measure_shapes(decoder, shapes, int(protocol.get("generation_runs") or 3), report)
    measured = [r for r in rows if "skipped" not in r]
    if not measured:
        from ..errors import InputError

        raise InputError(f"every shape exceeds the model's max_length {decoder.max_length}: give shorter "
                         "--prompt-tokens / --new-tokens", field="prompt_tokens")
    headline = HEADLINE_SHAPE if HEADLINE_SHAPE in steps else (measured[0]["prompt_tokens"], measured[0]["new_tokens"])
    result["latency"] = latency_stats(steps[headline])  # per output token at the headline shape
    result["generation"] = {"shapes": rows, "headline": {"prompt_tokens": headline[0], "new_tokens": headline[1]},
                            "latency_is": "time per output token (one decode step) at the headline shape"}
    result["input_shapes"] = [{"prompt_tokens": p, "new_tokens": n} for p, n in shapes]
    result["peak_rss_bytes"] = peak_rss_bytes()

    if spec.get("accuracy") and spec.get("reference"):
        report.stage("accuracy")
        workload = _workload(spec)
        count = int(protocol.get("agreement_prompts") or DEFAULT_AGREEMENT_PROMPTS)
        new_tokens = int(protocol.get("agreement_tokens") or DEFAULT_AGREEMENT_TOKENS)
        prompts = list(workload.prompts(count)) if workload is not None and hasattr(workload, "prompts") \
            else [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(min(count, len(DEFAULT_PROMPTS)))]
        prompt_ids = encode_prompts(decoder, prompts)
        report.stage("reference")
        reference = reference_tokens(spec["reference"], prompt_ids, new_tokens, spec.get("reference_cache"))
        report.stage("accuracy")
        forced = teacher_forced_predictions(decoder, prompt_ids, reference)
        free = greedy_tokens(decoder, prompt_ids, new_tokens)
        scores = agreement(reference, forced, free)
        result["accuracy"] = {k: scores[k] for k in ("token_agreement", "sequence_identical", "mean_common_prefix")}
        result["primary_metric"] = "token_agreement"
        result["eval_samples"] = scores["prompts"]
        result["agreement"] = {"reference": "float32 source IR on onnxruntime (greedy)",
                               "prompts": scores["prompts"], "new_tokens": new_tokens,
                               "reference_tokens": scores["reference_tokens"],
                               "prompt_source": getattr(workload, "name", None) or "built-in prompts",
                               "top1": scores["token_agreement"]}
    decoder.close()
    return result
