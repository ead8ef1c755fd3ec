"""One bench cell in its own process: `python -m edgeagent.bench.worker MODE SPEC.json FD`.

Modes: `compile` builds the cell's artifact; `measure` loads it and times it, reads peak
memory, evaluates accuracy and agreement; `baseline` imports a backend's SDK alone and
reports the memory that costs. The worker reports on file descriptor FD (a pipe from the
parent, so SDK chatter on stdout cannot corrupt it) as JSON lines: `stage` events when a stage
begins, so the parent applies that stage's timeout, then one `result` or `error` event.

Test-only hook: EDGEAGENT_BENCH_FAULT="STAGE:KIND[:MATCH]" makes the cell whose name contains
MATCH misbehave on entering STAGE; KIND is crash (abort), segv, hang, oom or error. Tests use it
to prove the parent survives each failure; it does nothing unless set.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

FAULT_ENV = "EDGEAGENT_BENCH_FAULT"


class Reporter:
    """JSON lines to the parent; every line is flushed before the next stage begins."""

    def __init__(self, fd: int, cell: str) -> None:
        self.stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self.cell = cell

    def send(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self.stream.flush()

    def stage(self, name: str) -> None:
        self.send("stage", stage=name, t=time.time())
        _maybe_fault(name, self.cell)


def _maybe_fault(stage: str, cell: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":", 2)
    if len(parts) < 2 or parts[0] != stage or (len(parts) == 3 and parts[2] not in cell):
        return
    kind = parts[1]
    if kind == "crash":
        os.abort()
    elif kind == "segv":
        ctypes.string_at(0)
    elif kind == "hang":
        time.sleep(3600)
    elif kind == "oom":
        raise MemoryError("injected by " + FAULT_ENV)
    elif kind == "error":
        raise RuntimeError("injected by " + FAULT_ENV)


def peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM where /proc has it, else ru_maxrss."""
    from edgeagent._proc import proc_field_bytes

    peak = proc_field_bytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS reports bytes


def _target(spec: dict[str, Any]):
    if not spec.get("target"):
        return None
    from edgeagent.targets import Target

    return Target.from_json(spec["target"])


def _workload(spec: dict[str, Any]):
    if not spec.get("workload"):
        return None
    from edgeagent.workloads import workload_from_spec

    return workload_from_spec(spec["workload"])


def run_compile(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Build the cell's artifact. (`--precisions auto` is planned by the parent, never here.)"""
    from edgeagent.data import Dataset
    from edgeagent.ir import load
    from edgeagent.pipeline import compile as compile_model

    report.stage("compile")
    ir = load(spec["model"]["path"])
    calibration = None
    if spec.get("calibration"):
        calibration = Dataset.from_npz(spec["calibration"], input_names=[s.name for s in ir.inputs])
    elif spec.get("precision") == "int8" and spec.get("workload") and not spec["model"].get("task"):
        calibration = _workload(spec).calibration(ir.inputs)  # decoders' int8 is weight-only: no data
    start = time.perf_counter()
    artifact = compile_model(ir, spec["backend"], spec["precision"], calibration=calibration,
                             target=_target(spec), out=spec["artifact_dir"],
                             options=spec.get("options") or None)
    return {"compile_s": time.perf_counter() - start, "artifact": str(artifact.path),
            "recipe": dict(artifact.recipe)}


def _timed_loop(fn, items: list, *, min_calls: int, min_time_s: float) -> list[int]:
    """Per-call nanoseconds around the call only; stops once both minimums are met."""
    samples: list[int] = []
    count = len(items)
    clock = time.perf_counter_ns
    deadline_ns = clock() + int(min_time_s * 1e9)
    i = 0
    while i < min_calls or clock() < deadline_ns:
        item = items[i % count]
        start = clock()
        fn(item)
        samples.append(clock() - start)
        i += 1
    return samples


def _warm(fn, items: list, calls: int, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    i = 0
    while i < calls or time.perf_counter() < deadline:
        fn(items[i % len(items)])
        i += 1


def _stack(feeds: list[dict[str, np.ndarray]], batch: int) -> dict[str, np.ndarray] | None:
    """`batch` timing feeds stacked into one, or None when their shapes differ."""
    chosen = [feeds[i % len(feeds)] for i in range(batch)]
    shapes = {tuple((k, v.shape) for k, v in sorted(f.items())) for f in chosen}
    if len(shapes) != 1:
        return None
    return {name: np.concatenate([f[name] for f in chosen]) for name in chosen[0]}


def _check_finite(outputs: dict[str, np.ndarray]) -> None:
    from edgeagent.errors import EdgeAgentError

    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = "NaN" if np.isnan(value).any() else "Inf"
            raise EdgeAgentError(f"output {name!r} contains {bad}: the compiled model is numerically "
                                 "broken at this precision (try fp32 or another INT8 recipe)")


def _evaluate(session, workload, inputs) -> tuple[dict[str, np.ndarray], np.ndarray | None, list]:
    parts: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    feeds_used: list[dict[str, np.ndarray]] = []
    for feeds, batch_labels in workload.eval_batches(inputs):
        out = session.run(feeds)
        _check_finite(out)
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value))
        if batch_labels is not None:
            labels.append(np.asarray(batch_labels))
        feeds_used.append(feeds)
    outputs = {name: np.concatenate(v) for name, v in parts.items()}
    return outputs, (np.concatenate(labels) if labels else None), feeds_used


def _agreement(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    common = [n for n in outputs if n in reference]
    if not common:
        return {"reason": "no output names in common with the reference"}
    diffs = []
    for name in common:
        a, b = np.asarray(outputs[name]), np.asarray(reference[name])
        if a.shape != b.shape:
            return {"reason": f"output {name!r} has shape {a.shape}, the reference {b.shape}"}
        if np.issubdtype(a.dtype, np.number):
            diffs.append(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0)
    first, ref = outputs[common[0]], reference[common[0]]
    result: dict[str, Any] = {"max_abs_diff": max(diffs) if diffs else None}
    if np.issubdtype(first.dtype, np.floating) and first.ndim >= 2 and first.shape[-1] > 1:
        result["top1"] = float(np.mean(first.reshape(-1, first.shape[-1]).argmax(-1)
                                       == ref.reshape(-1, ref.shape[-1]).argmax(-1)))
    return result


def _reference_outputs(path: str, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """fp32 outputs of the source model on ONNX Runtime's CPU provider: the agreement yardstick."""
    import onnxruntime as ort

    from edgeagent.hostinfo import usable_cpus
    from edgeagent.ir import load

    ir = load(path)  # checked before the runtime parses it, like every model edgeagent opens
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cpus()
    session = ort.InferenceSession(str(ir.path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in batches:
        for name, value in zip(names, session.run(names, feeds)):
            parts[name].append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}


def _feeds_digest(batches: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for feeds in batches:
        for name in sorted(feeds):
            value = np.ascontiguousarray(feeds[name])
            digest.update(f"{name}:{value.dtype}:{value.shape};".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _cached_reference_outputs(path: str, batches: list[dict[str, np.ndarray]],
                              cache: dict[str, str] | None) -> dict[str, np.ndarray]:
    """`_reference_outputs`, reused across the cells of one model: every backend and precision of it
    is compared with the same fp32 outputs on the same inputs, so they are computed once per run.

    `cache` is {"path": a file in the run's private workdir, "model": the model's sha256}; the file
    is used only when it was made from that model and these very inputs."""
    if not cache:
        return _reference_outputs(path, batches)
    key = {"model": cache["model"], "feeds": _feeds_digest(batches)}
    file = Path(cache["path"])
    if file.is_file():
        with np.load(file, allow_pickle=False) as saved:
            if json.loads(str(saved["__key__"])) == key:
                return {name: saved[name] for name in saved.files if name != "__key__"}
    outputs = _reference_outputs(path, batches)
    partial = file.with_name(f"{file.name}.{os.getpid()}.partial.npz")
    np.savez(partial, __key__=np.asarray(json.dumps(key)), **outputs)
    os.replace(partial, file)  # never a half-written cache for the next cell
    return outputs


def run_measure(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    from edgeagent.bench.stats import latency_stats
    from edgeagent.data import synthetic_feeds
    from edgeagent.pipeline import load_session

    from edgeagent.artifact import open_artifact

    if open_artifact(spec["artifact_dir"]).capabilities.get("decoder"):
        from edgeagent.bench import generative

        return generative.run_measure(spec, report)
    protocol = spec["protocol"]
    result: dict[str, Any] = {}
    report.stage("load")
    start = time.perf_counter()
    session = load_session(spec["artifact_dir"], options=spec.get("load_options") or None,
                           target=_target(spec))
    result["load_s"] = time.perf_counter() - start
    result["threads"] = getattr(session, "threads", None)
    if getattr(session, "thread_choice", None):  # threads=auto: what was measured at load
        result["thread_choice_us"] = session.thread_choice

    workload = _workload(spec)
    inputs = session.inputs
    if workload is not None:
        feeds = workload.timing_feeds(inputs, int(protocol["timing_inputs"]))
    else:
        feeds = [synthetic_feeds(inputs, dims=spec.get("dims"), seed=i) for i in range(4)]
    if not feeds:
        from edgeagent.errors import InputError

        raise InputError("the workload gave no timing inputs: it has no evaluation data for this model")

    report.stage("first_inference")
    start = time.perf_counter()
    first = session.run(feeds[0])
    result["first_inference_s"] = time.perf_counter() - start
    _check_finite(first)
    shapes = {json.dumps({k: list(v.shape) for k, v in f.items()}, sort_keys=True) for f in feeds}
    result["input_shapes"] = [json.loads(s) for s in sorted(shapes)[:8]]

    report.stage("warmup")
    _warm(session.run, feeds, int(protocol["warmup_calls"]), float(protocol["warmup_s"]))
    report.stage("timed")
    reset_device_timings = getattr(session, "reset_device_timings", None)
    if reset_device_timings is not None:  # GPU backends also time with device events
        reset_device_timings()
    samples = _timed_loop(session.run, feeds, min_calls=int(protocol["min_calls"]),
                          min_time_s=float(protocol["min_time_s"]))
    result["latency"] = latency_stats(samples)
    if reset_device_timings is not None:
        result["device_latency"] = session.device_timings()

    batch = int(protocol.get("batch") or 1)
    from edgeagent.workloads import batch_axis_dynamic

    if batch > 1:
        report.stage("throughput")
        stacked = _stack(feeds, batch) if batch_axis_dynamic(inputs) else None
        if stacked is None:
            result["throughput"] = {"batch": batch, "skipped": "the batch axis is fixed" if not
                                    batch_axis_dynamic(inputs) else "timing inputs differ in shape"}
        else:
            _warm(session.run, [stacked], 2, 0.0)
            times = _timed_loop(session.run, [stacked], min_calls=10,
                                min_time_s=float(protocol["min_time_s"]) / 2)
            seconds = sum(times) / 1e9
            result["throughput"] = {"batch": batch, "calls": len(times),
                                    "items_per_s": batch * len(times) / seconds,
                                    "batch_p50_s": float(np.median(times)) / 1e9}
    if workload is not None:
        e2e = workload.end_to_end(session)
        if e2e is not None:
            report.stage("end_to_end")
            fn, items = e2e
            _warm(fn, items, int(protocol["warmup_calls"]), float(protocol["warmup_s"]))
            result["end_to_end"] = latency_stats(_timed_loop(fn, items, min_calls=int(protocol["min_calls"]),
                                                             min_time_s=float(protocol["min_time_s"])))
    # Read before accuracy and the reference run, whose buffers are not part of serving.
    result["peak_rss_bytes"] = peak_rss_bytes()

    if spec.get("accuracy") and workload is not None:
        report.stage("accuracy")
        outputs, labels, batches = _evaluate(session, workload, inputs)
        result["accuracy"] = workload.metrics(outputs, labels)
        if result["accuracy"]:
            result["primary_metric"] = workload.primary_metric
        result["eval_samples"] = int(next(iter(outputs.values())).shape[0]) if outputs else 0
        if spec.get("reference"):
            report.stage("reference")
            reference = _cached_reference_outputs(spec["reference"], batches, spec.get("reference_cache"))
            result["agreement"] = {"reference": "onnxruntime fp32 of the source model",
                                   **_agreement(outputs, reference)}
    session.close()
    return result


def run_baseline(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    import importlib

    from edgeagent.backend import get_backend

    report.stage("import")
    before = peak_rss_bytes()
    backend = get_backend(spec["backend"])
    for module in backend.sdk_modules:
        importlib.import_module(module)
    return {"python_rss_bytes": before, "import_rss_bytes": peak_rss_bytes()}


MODES = {"compile": run_compile, "measure": run_measure, "baseline": run_baseline}


def main(argv: list[str]) -> int:
    mode, spec_path, fd = argv[0], argv[1], int(argv[2])
    if mode not in MODES:
        from edgeagent.errors import InternalError

        raise InternalError(f"the bench started a worker in unknown mode {mode!r}; modes: {sorted(MODES)}")
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    report = Reporter(fd, spec.get("name", ""))
    try:
        report.stage("start")
        result = MODES[mode](spec, report)
    except MemoryError as exc:
        report.send("error", status="oom", message=f"out of memory: {exc}".rstrip(": "))
        return 3
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the cell's status
        from edgeagent.errors import EdgeAgentError

        known = isinstance(exc, EdgeAgentError)
        report.send("error", status="error", message=f"{type(exc).__name__}: {exc}", known=known,
                    traceback=None if known else traceback.format_exc(limit=8))
        return 1
    report.send("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
