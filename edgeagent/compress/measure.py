"""The gate: is the compressed export faster (or smaller) than the input's, by more than the noise?

Both ONNX files are compiled the same way (default: ONNX Runtime, dynamic INT8 with per-channel
weight scales, the demo's recipe) and timed in one process, side by side: rounds alternate which
model goes first, so the shared machine's drift hits both alike. Each round keeps its 101 latency
quantiles, which is what `edgeagent.bench.compare` bootstraps: the 95 % confidence interval of the
p50 change over rounds. Faster means that interval lies entirely below −`min_change_pct`. Size is
the compiled artifact's bytes, which do not vary between runs.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .specs import MeasureSpec

QUANTILES = np.linspace(0, 100, 101)


def feeds_from_examples(examples: Sequence[Mapping[str, Any]], inputs, count: int = 32) -> list[dict[str, np.ndarray]]:
    """One unpadded sentence per call, as the agent runs, from training-format examples."""
    feeds = []
    for example in examples[:count]:
        ids = np.asarray(example["input_ids"])[None, :]
        row = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feeds.append({spec.name: row[spec.name].astype(spec.dtype) for spec in inputs if spec.name in row})
    return feeds


def _round_quantiles(fn: Callable[[Any], Any], items: list, seconds: float) -> list[float]:
    from ..bench.worker import _timed_loop  # the bench's own timing loop: per-call ns, call only

    samples = _timed_loop(fn, items, min_calls=20, min_time_s=seconds)
    return [float(v) for v in np.percentile(np.asarray(samples, dtype=np.float64) / 1e9, QUANTILES)]


def _cell(rounds: list[list[float]]) -> dict[str, Any]:
    """What `edgeagent.bench.compare.p50_change_interval` reads: repeats with their quantiles."""
    return {"repeats": [{"quantiles": q} for q in rounds], "stats": {"p50": statistics.median(q[50] for q in rounds)}}


def measure_files(base_onnx: str | os.PathLike, new_onnx: str | os.PathLike, *, spec: MeasureSpec,
                  workdir: str | os.PathLike, workload=None, examples: Sequence[Mapping[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Compile both models alike and measure size and p50 side by side.

    Args:
        base_onnx: the input model's export.
        new_onnx: the compressed model's export.
        spec: backend, precision, options, rounds and the goal.
        workdir: where the two artifacts are built.
        workload: times `end_to_end` (text in, tool call out) where it has one, else its
            `timing_feeds`; also supplies INT8 calibration for static recipes.
        examples: without a workload, training-format examples timed one sentence per call.

    Returns:
        The measurement: sizes, p50s, the change and its 95 % interval, and whether it is kept.

    Raises:
        InputError: neither a workload nor examples to time with; what compile raises.
    """
    from ..bench.compare import CONFIDENCE, p50_change_interval
    from ..errors import InputError
    from ..ir import load
    from ..pipeline import compile as compile_model, load_session

    if workload is None and not examples and spec.goal == "speed":
        raise InputError("measuring speed needs a workload or examples to time", field="measure")
    workdir = Path(workdir)
    artifacts, sessions, calls = {}, {}, {}
    mode = "model"
    try:
        for name, path in (("input", base_onnx), ("compressed", new_onnx)):
            ir = load(path)
            calibration = None
            if spec.precision == "int8" and spec.options.get("int8") != "dynamic" and workload is not None:
                calibration = workload.calibration(ir.inputs)
            artifacts[name] = compile_model(ir, spec.backend, spec.precision, calibration=calibration,
                                            options=dict(spec.options), out=workdir / f"{name}-{spec.precision}")
        sizes = {name: int(a.size_bytes) for name, a in artifacts.items()}
        result: dict[str, Any] = {"goal": spec.goal, "backend": spec.backend, "precision": spec.precision,
                                  "options": dict(spec.options), "threads": spec.threads, "rounds": spec.rounds,
                                  "size_bytes": sizes, "size_ratio": sizes["input"] / max(1, sizes["compressed"])}
        if spec.goal == "size":
            result["kept"] = sizes["compressed"] < sizes["input"] * (1 - spec.min_change_pct / 100)
            return result
        for name, artifact in artifacts.items():
            sessions[name] = load_session(artifact, options={"threads": spec.threads})
            session = sessions[name]
            end_to_end = workload.end_to_end(session) if workload is not None else None
            if end_to_end is not None:
                mode = "end_to_end"
                calls[name] = end_to_end
            else:
                feeds = workload.timing_feeds(session.inputs, 32) if workload is not None \
                    else feeds_from_examples(examples, session.inputs)
                calls[name] = (lambda s: (lambda f: s.run(f, check_finite=False)))(session), feeds
        rounds: dict[str, list[list[float]]] = {name: [] for name in calls}
        order = list(calls)
        for index in range(spec.rounds):
            for name in (order if index % 2 == 0 else order[::-1]):
                fn, items = calls[name]
                for item in items[:8]:  # warm this model's caches after the other one ran
                    fn(item)
                rounds[name].append(_round_quantiles(fn, list(items), spec.min_seconds))
        base, new = _cell(rounds["input"]), _cell(rounds["compressed"])
        low, high = p50_change_interval(base, new)
        change = (new["stats"]["p50"] / base["stats"]["p50"] - 1) * 100
        result.update({"mode": mode, "p50_ms": {"input": base["stats"]["p50"] * 1e3,
                                               "compressed": new["stats"]["p50"] * 1e3},
                       "speedup": base["stats"]["p50"] / new["stats"]["p50"], "p50_change_pct": change,
                       "confidence": CONFIDENCE, "interval_pct": [low, high],
                       "kept": high < -spec.min_change_pct})
        return result
    finally:
        for session in sessions.values():
            session.close()


def verdict(result: Mapping[str, Any]) -> str:
    """One line: what was measured and what it means."""
    sizes = result["size_bytes"]
    size = f"{sizes['input'] / 1e6:.2f} → {sizes['compressed'] / 1e6:.2f} MB ({result['size_ratio']:.2f}× smaller)"
    if result["goal"] == "size":
        return f"{result['precision']} artifact {size}: {'kept' if result['kept'] else 'not smaller'}"
    low, high = result["interval_pct"]
    p50 = result["p50_ms"]
    return (f"{result['mode'].replace('_', ' ')} p50 {p50['input']:.3f} → {p50['compressed']:.3f} ms "
            f"({result['speedup']:.2f}×, change {result['p50_change_pct']:+.1f} %, {result['confidence']:.0%} CI "
            f"[{low:+.1f} %, {high:+.1f} %]) on {result['backend']} {result['precision']}, {size}: "
            + ("faster beyond the noise, kept" if result["kept"] else "not shown to be faster"))
