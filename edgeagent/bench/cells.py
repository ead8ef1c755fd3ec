"""One cell, end to end: compile (ONNX models), measure in repeated processes, summarise.

Everything a cell does happens in worker processes (`bench.process`); this module plans the
stages, hands each its spec and turns the outcomes into the cell's record. A cell's own failure
becomes its status; it never raises.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import open_artifact
from ..errors import ArtifactError, CalibrationError, EdgeAgentError
from ..hostinfo import usable_cpus
from .config import BenchConfig
from .grid import AUTO, Cell, cell_folder_name
from .process import Limits, StageOutcome, run_stage
from .stats import aggregate, is_unstable, median, median_throughput


@dataclass
class RunContext:
    config: BenchConfig
    target: Any
    fit: Any
    workload: dict[str, Any] | None
    timeouts: dict[str, float]
    limits: Limits
    started: _dt.datetime
    baselines: dict[str, Any] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edgeagent-bench-")))


def baselines(backends: Sequence[str], context: RunContext) -> dict[str, Any]:
    """Import-only peak memory of each backend, in a process like a cell's."""
    found: dict[str, Any] = {}
    for backend in dict.fromkeys(backends):
        outcome = run_stage("baseline", {"backend": backend, "name": f"baseline[{backend}]"},
                            timeouts=context.timeouts, log=context.workdir / f"baseline-{backend}.log",
                            limits=context.limits)
        found[backend] = outcome.result if outcome.status == "ok" else {"status": outcome.status,
                                                                         "message": outcome.message}
    return found


def run_cell(cell: Cell, context: RunContext) -> dict[str, Any]:
    """Compile (for ONNX models) and measure one cell; never raises for the cell's own failures."""
    config, protocol = context.config, context.config.protocol
    record: dict[str, Any] = {"name": cell.name, "model": cell.model, "backend": cell.backend,
                              "precision": cell.precision, "target": context.target.name,
                              "emulated": context.fit.mode == "emulated", "options": cell.options,
                              "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if cell.skip:
        return {**record, "status": "skipped", "message": cell.skip}
    safe = cell_folder_name(cell.name)
    log = context.workdir / f"{safe}.log"
    target_json = context.target.to_json()
    base = {"name": cell.name, "backend": cell.backend, "precision": cell.precision,
            "target": target_json, "workload": context.workload}
    if cell.model["kind"] == "onnx":
        artifact_dir = context.workdir / safe
        if cell.precision == AUTO:
            compiled = _choose_recipe(cell, context, artifact_dir)
        else:
            spec = {**base, "model": cell.model, "artifact_dir": str(artifact_dir), "options": cell.compile_options,
                    "calibration": str(Path(config.calibration).resolve()) if config.calibration else None}
            compiled = run_stage("compile", spec, timeouts=context.timeouts, log=log)
        if compiled.status != "ok":
            return {**record, "status": compiled.status, "stage": compiled.stage, "message": compiled.message,
                    **({"traceback": compiled.result["traceback"]} if "traceback" in compiled.result else {})}
        record["cold_start"] = {"compile_s": compiled.result["compile_s"]}
        record["recipe"] = compiled.result.get("recipe")
        reference = cell.model["path"]
        suffix = "json" if cell.model.get("task") else "npz"  # decoders cache greedy tokens, encoders outputs
        reference_cache = {"path": str(context.workdir / f"reference-{cell.model['sha256'][:16]}.{suffix}"),
                           "model": cell.model["sha256"]}
    else:
        artifact_dir = Path(cell.model["path"])
        record["cold_start"] = {"compile_s": None}
        reference = str(Path(config.reference).resolve()) if config.reference else None
        reference_cache = None
    try:
        artifact = open_artifact(artifact_dir)
    except ArtifactError as exc:
        return {**record, "status": "error", "stage": "compile", "message": str(exc)}
    record["size_bytes"] = artifact.size_bytes
    record["artifact_sha256"] = hashlib.sha256((artifact_dir / "manifest.json").read_bytes()).hexdigest()
    record.setdefault("recipe", dict(artifact.recipe))

    runs = []
    for repeat in range(protocol.repeats):
        spec = {**base, "artifact_dir": str(artifact_dir), "load_options": cell.load_options,
                "protocol": dataclasses.asdict(protocol), "accuracy": repeat == 0,
                "reference": reference, "reference_cache": reference_cache, "dims": dict(config.dims)}
        outcome = run_stage("measure", spec, timeouts=context.timeouts, log=log, limits=context.limits)
        if outcome.status != "ok":
            return {**record, "status": outcome.status, "stage": outcome.stage, "message": outcome.message,
                    "repeats_done": repeat,
                    **({"traceback": outcome.result["traceback"]} if "traceback" in outcome.result else {})}
        runs.append(outcome.result)
    summary = summarise(runs, context, cell)
    summary["cold_start"] = {**record["cold_start"], **summary["cold_start"]}
    return {**record, **summary}


def summarise(runs: list[dict[str, Any]], context: RunContext, cell: Cell) -> dict[str, Any]:
    per_run = [r["latency"] for r in runs]
    stats, spread = aggregate(per_run)
    first = runs[0]
    summary: dict[str, Any] = {
        "status": "ok", "stats": stats, "spread": spread,
        # Each repeat keeps its 101 quantiles: compare bootstraps its confidence intervals from them.
        "repeats": [dict(s) for s in per_run],
        "flags": ["unstable"] if is_unstable(stats, spread, context.config.protocol.max_cv) else [],
        "threads": first.get("threads"), "input_shapes": first.get("input_shapes"),
        **({"thread_choice_us": first["thread_choice_us"]} if first.get("thread_choice_us") else {}),
    }
    summary["cold_start"] = {
        "load_s": median([r["load_s"] for r in runs]), "load_s_first": first["load_s"],
        "first_inference_s": median([r["first_inference_s"] for r in runs]),
        "first_inference_s_first": first["first_inference_s"]}
    baseline = context.baselines.get(cell.backend, {})
    peaks = [r["peak_rss_bytes"] for r in runs]
    summary["memory"] = {"peak_rss_bytes": max(peaks), "peak_rss_bytes_median": median(peaks),
                         "import_baseline_rss_bytes": baseline.get("import_rss_bytes"),
                         "python_baseline_rss_bytes": baseline.get("python_rss_bytes")}
    if baseline.get("import_rss_bytes"):
        summary["memory"]["model_rss_bytes"] = max(peaks) - baseline["import_rss_bytes"]
    if first.get("throughput"):
        summary["throughput"] = median_throughput([r["throughput"] for r in runs])
    if first.get("end_to_end"):
        e2e_stats, e2e_spread = aggregate([r["end_to_end"] for r in runs])
        summary["end_to_end"] = {"stats": e2e_stats, "spread": e2e_spread}
    if first.get("device_latency"):
        summary["device_latency"] = {
            kind: {stat: median([r["device_latency"][kind][stat] for r in runs]) for stat in ("p50", "p90", "p99")}
            for kind in first["device_latency"]}
    if first.get("generation"):
        summary["generation"] = _median_generation([r["generation"] for r in runs])
    for key in ("accuracy", "primary_metric", "agreement", "eval_samples"):
        if key in first:
            summary[key] = first[key]
    return summary


def _median_generation(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape, the median of each figure across the repeats (each repeat's are medians already)."""
    shapes = []
    for i, row in enumerate(runs[0]["shapes"]):
        merged = dict(row)
        for key, value in row.items():
            if isinstance(value, float):
                merged[key] = median([r["shapes"][i][key] for r in runs])
        merged["repeats"] = len(runs)
        shapes.append(merged)
    return {**runs[0], "shapes": shapes}


def _choose_recipe(cell: Cell, context: RunContext, artifact_dir: Path) -> StageOutcome:
    """`--precisions auto`: the parent measures the backend's recipes (each a cell of its own
    processes, `bench.auto.choose`) and keeps the winner as this cell's artifact."""
    from .auto import choose

    workload = context.workload or {}
    calibration = context.config.calibration or workload.get("path")
    start = time.perf_counter()
    try:
        if not calibration:
            raise CalibrationError("--precisions auto measures INT8 recipes and needs calibration data as a "
                                   "file: pass --calibration FILE.npz or --eval FILE.npz")
        artifact = choose(cell.model["path"], out=artifact_dir, calibration=calibration, eval=workload.get("path"),
                          target=context.target, backends=[cell.backend], device=cell.options.get("device"),
                          workdir=artifact_dir.with_name(artifact_dir.name + ".candidates"))
    except EdgeAgentError as exc:
        return StageOutcome("error", {}, "compile", f"{type(exc).__name__}: {exc}")
    selection = artifact.manifest["selection"]
    return StageOutcome("ok", {"compile_s": time.perf_counter() - start, "artifact": str(artifact.path),
                               "recipe": {**dict(artifact.recipe), "chosen": selection["chosen"],
                                          "notes": selection["notes"]}}, "compile")


def limits_for(target, fit) -> Limits:
    """The target's threads and memory cap, applied when this machine is not the target."""
    if fit.mode != "emulated":
        return Limits()
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(usable_cpus()))
    cpus = tuple(allowed[:max(1, min(target.threads, len(allowed)))])
    return Limits(cpus=cpus, memory_bytes=target.memory_limit_bytes)
