"""What one `edgeagent bench` run is asked to do: the timing protocol and the run's settings."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class BenchProtocol:
    """How each cell is timed. The defaults suit a quick run; `release()` is for published figures.

    Args:
        warmup_calls: warm-up calls, at least (default 10); warm-up also lasts `warmup_s`.
        warmup_s: warm-up seconds, at least (default 0.2).
        min_calls: timed calls, at least (default 100); timing also lasts `min_time_s`.
        min_time_s: timed seconds, at least (default 1).
        repeats: measurement processes per cell (default 3); figures are medians across them.
        batch: batch size of the throughput run where the batch axis is dynamic (default 8; 1 skips).
        timing_inputs: distinct inputs cycled through while timing (default 64).
        max_cv: above this robust within-run CV, or spread across repeats, a cell is `unstable`.
        prompt_tokens: decoders' prompt lengths; every one is timed with every `new_tokens`
            (default 32/128/512).
        new_tokens: decoders' output lengths (default 32/128).
        generation_runs: timed runs per decoder shape in each process, after one warm-up (default 3).
        agreement_prompts: decoders' greedy agreement with the float32 reference is measured over
            this many prompts (the workload's, else built-in ones; default 200).
        agreement_tokens: ... and this many tokens each (default 32).
    """

    warmup_calls: int = 10
    warmup_s: float = 0.2
    min_calls: int = 100
    min_time_s: float = 1.0
    repeats: int = 3
    batch: int = 8
    timing_inputs: int = 64
    max_cv: float = 0.10
    prompt_tokens: tuple[int, ...] = (32, 128, 512)
    new_tokens: tuple[int, ...] = (32, 128)
    generation_runs: int = 3
    agreement_prompts: int = 200
    agreement_tokens: int = 32

    @classmethod
    def release(cls) -> BenchProtocol:
        """MLPerf-style: at least 1024 queries and 60 s per run, five repeats."""
        return cls(warmup_calls=100, warmup_s=5.0, min_calls=1024, min_time_s=60.0, repeats=5)

    def check(self) -> None:
        for name in ("prompt_tokens", "new_tokens"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1_000_000
                                     for v in values):
                raise InputError(f"{name} must be a non-empty list of positive token counts, got {values!r}",
                                 field=name)
        for name in ("warmup_calls", "min_calls", "repeats", "batch", "timing_inputs", "generation_runs",
                     "agreement_prompts", "agreement_tokens"):
            if getattr(self, name) < (0 if name == "warmup_calls" else 1):
                raise InputError(f"{name} must be positive, got {getattr(self, name)}", field=name)
        if self.min_time_s < 0 or self.warmup_s < 0 or not 0 < self.max_cv < 10:
            raise InputError("min_time_s and warmup_s must be ≥ 0 and max_cv in (0, 10)", field="protocol")


@dataclass
class BenchConfig:
    """One `edgeagent bench` invocation.

    Args:
        models: ONNX files (compiled per cell) or artifact folders (run as built).
        out: the results JSON path.
        workload: a registered workload name, or None.
        eval: an `.npz` with one array per input and `labels`, or None.
        calibration: an `.npz` for INT8 calibration (default: the eval data's inputs).
        backends: names (default: the target's backends usable here).
        precisions: names (default: the target's presets, else fp32 and int8).
        target: a target name, a `.toml` path or "host" (default).
        protocol: timing settings.
        options: per-backend options, e.g. {"onnxruntime": {"int8": "static"}}.
        timeouts: seconds per stage group (compile, load, first_inference, run, accuracy).
        reference: fp32 ONNX model that artifacts' agreement is measured against.
        dims: sizes for symbolic dims when timing without data, e.g. {"sequence": 32}.
        device: cpu, gpu, gpu.1, npu, …: every cell runs there, mapped to each backend's own device;
            a backend that cannot use it, or a device absent here, makes the cell skipped with why.
        resume: continue an interrupted run from its journal.
        progress: show a progress bar on a terminal.
    """

    models: Sequence[str | os.PathLike]
    out: str | os.PathLike
    workload: str | None = None
    eval: str | os.PathLike | None = None
    calibration: str | os.PathLike | None = None
    backends: Sequence[str] | None = None
    precisions: Sequence[str] | None = None
    target: Any = None
    protocol: BenchProtocol = field(default_factory=BenchProtocol)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    reference: str | os.PathLike | None = None
    dims: Mapping[str, int] = field(default_factory=dict)
    device: str | None = None
    resume: bool = False
    progress: bool = True
    argv: Sequence[str] | None = None
