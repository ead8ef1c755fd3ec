"""Run a grid of bench cells, each stage in its own process, into one results file.

Every cell runs the same protocol through the backend-neutral `Session` (DESIGN.md: the
bench never asks which backend it runs). The parent only spawns, watches and records: a
crash, hang or memory blow-up in a cell becomes that cell's status and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._proc import proc_field_bytes
from ..artifact import open_artifact
from ..backend import Precision, backend_entries
from ..errors import ArtifactError, InputError
from ..ir import load
from .results import SCHEMA, Journal, ResultsError, journal_path, write_results
from .stats import aggregate, is_unstable

WORKER = "edgeagent.bench.worker"
AUTO = "auto"  # a precision chosen per cell by measuring the backend's recipes (edgeagent.recipes)


@dataclass(frozen=True)
class BenchProtocol:
    """How each cell is timed. The defaults suit a quick run; `release()` is for published figures.

    Args:
        warmup_calls, warmup_s: warm-up until both are reached (default 10 calls, 0.2 s).
        min_calls, min_time_s: timed calls until both are reached (default 100, 1 s).
        repeats: measurement processes per cell (default 3); figures are medians across them.
        batch: batch size of the throughput run where the batch axis is dynamic (default 8; 1 skips).
        timing_inputs: distinct inputs cycled through while timing (default 64).
        max_cv: above this robust within-run CV, or spread across repeats, a cell is `unstable`.
    """

    warmup_calls: int = 10
    warmup_s: float = 0.2
    min_calls: int = 100
    min_time_s: float = 1.0
    repeats: int = 3
    batch: int = 8
    timing_inputs: int = 64
    max_cv: float = 0.10

    @classmethod
    def release(cls) -> BenchProtocol:
        """MLPerf-style: at least 1024 queries and 60 s per run, five repeats."""
        return cls(warmup_calls=100, warmup_s=5.0, min_calls=1024, min_time_s=60.0, repeats=5)

    def check(self) -> None:
        for name in ("warmup_calls", "min_calls", "repeats", "batch", "timing_inputs"):
            if getattr(self, name) < (0 if name == "warmup_calls" else 1):
                raise InputError(f"{name} must be positive, got {getattr(self, name)}", field=name)
        if self.min_time_s < 0 or self.warmup_s < 0 or not 0 < self.max_cv < 10:
            raise InputError("min_time_s and warmup_s must be ≥ 0 and max_cv in (0, 10)", field="protocol")


DEFAULT_TIMEOUTS = {"compile": 1800.0, "load": 300.0, "first_inference": 120.0, "run": None,
                    "accuracy": 900.0}
STAGE_GROUP = {"start": "load", "import": "load", "compile": "compile", "load": "load",
               "first_inference": "first_inference", "warmup": "run", "timed": "run",
               "throughput": "run", "end_to_end": "run", "accuracy": "accuracy", "reference": "accuracy"}


def stage_timeouts(protocol: BenchProtocol, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage group: the defaults, the timed run's scaled to the protocol, then overrides.

    Raises:
        InputError: an override for a stage group that does not exist.
    """
    unknown = sorted(set(overrides or {}) - set(DEFAULT_TIMEOUTS))
    if unknown:
        raise InputError(f"unknown timeout stage(s) {unknown}; stages: {sorted(DEFAULT_TIMEOUTS)}",
                         field="timeout")
    return {**DEFAULT_TIMEOUTS, "run": max(120.0, 20 * protocol.min_time_s), **dict(overrides or {})}


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
    resume: bool = False
    progress: bool = True
    argv: Sequence[str] | None = None


@dataclass
class Cell:
    name: str
    model: dict[str, Any]
    backend: str
    precision: str
    skip: str | None = None
    artifact: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageOutcome:
    status: str  # ok | error | crashed | timeout | oom
    result: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    message: str | None = None
    wall_s: float = 0.0


# --------------------------------------------------------------------------------------------
# One process

def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _rss_bytes(pid: int) -> int:
    return proc_field_bytes(f"/proc/{pid}/status", "VmRSS") or 0


@dataclass(frozen=True)
class Limits:
    """Constraints one cell process runs under (a target's, when emulating it)."""

    cpus: tuple[int, ...] | None = None
    memory_bytes: int | None = None

    @property
    def address_space_bytes(self) -> int | None:
        # RLIMIT_AS counts reserved address space, which runtimes take far beyond what they touch
        # (OpenVINO fails to load its plugin under 512 MiB of address space while using 140 MiB
        # resident). The resident cap is enforced by the watchdog; RLIMIT_AS is a backstop.
        return None if self.memory_bytes is None else self.memory_bytes + (2 << 30)

    def describe(self) -> dict[str, Any]:
        return {"cpus": list(self.cpus) if self.cpus else None, "memory_limit_bytes": self.memory_bytes,
                "enforcement": None if self.memory_bytes is None else
                "resident-set watchdog (kills the cell above the limit) and RLIMIT_AS at limit + 2 GiB"}

    def preexec(self) -> Callable[[], None]:
        cpus, address_space = self.cpus, self.address_space_bytes

        def apply() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)
            if address_space:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        return apply


def _die_with_parent() -> None:
    """Linux: SIGKILL this cell when the bench process dies, so a killed run leaves no orphans."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def run_stage(mode: str, spec: Mapping[str, Any], *, timeouts: Mapping[str, float], log: Path,
              limits: Limits = Limits(), env: Mapping[str, str] | None = None) -> StageOutcome:
    """Run one worker process and classify how it ended."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(spec, handle, default=str)
        spec_path = handle.name
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    try:
        with open(log, "ab") as log_handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", WORKER, mode, spec_path, str(write_fd)], pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle, start_new_session=True,
                preexec_fn=limits.preexec(), env={**os.environ, **(env or {})})
        os.close(write_fd)
        outcome = _watch(proc, read_fd, timeouts, limits)
    finally:
        os.close(read_fd)
        Path(spec_path).unlink(missing_ok=True)
    outcome.wall_s = time.perf_counter() - start
    if outcome.status in ("crashed", "error") and not outcome.message:
        outcome.message = "the worker ended without a result"
    if outcome.status == "crashed" and (tail := _tail(log)):
        outcome.message = f"{outcome.message}; log tail: {tail}"
    return outcome


def _tail(path: Path, chars: int = 600) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " ".join(text[-chars:].split())


def _watch(proc: subprocess.Popen, read_fd: int, timeouts: Mapping[str, float],
           limits: Limits) -> StageOutcome:
    buffer = b""
    stage = "start"
    deadline = time.monotonic() + timeouts[STAGE_GROUP[stage]]
    outcome: StageOutcome | None = None
    killed_for: str | None = None
    peak_seen = 0
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.02)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break  # the worker closed its end: it has exited or is exiting
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                if event["event"] == "stage":
                    stage = event["stage"]
                    deadline = time.monotonic() + timeouts[STAGE_GROUP.get(stage, "run")]
                elif event["event"] == "result":
                    fields = {k: v for k, v in event.items() if k != "event"}
                    outcome = StageOutcome("ok", fields, stage)
                elif event["event"] == "error":
                    outcome = StageOutcome(event.get("status", "error"), {}, stage, event.get("message"))
                    if event.get("traceback"):
                        outcome.result["traceback"] = event["traceback"]
        if limits.memory_bytes:
            rss = _rss_bytes(proc.pid)
            peak_seen = max(peak_seen, rss)
            if rss > limits.memory_bytes and killed_for is None:
                killed_for = "oom"
                _kill(proc)
        if time.monotonic() > deadline and killed_for is None:
            killed_for = "timeout"
            _kill(proc)
        if killed_for and proc.poll() is not None:
            break
    returncode = proc.wait()
    if killed_for == "timeout":
        return StageOutcome("timeout", {}, stage, f"stage {stage!r} exceeded its "
                            f"{timeouts[STAGE_GROUP.get(stage, 'run')]:.0f} s timeout; the cell was killed")
    if killed_for == "oom":
        return StageOutcome("oom", {"peak_rss_bytes": peak_seen}, stage,
                            f"resident memory {peak_seen / 2**20:.0f} MiB passed the "
                            f"{limits.memory_bytes / 2**20:.0f} MiB limit in stage {stage!r}")
    if outcome is not None and (outcome.status != "ok" or returncode == 0):
        return outcome
    if returncode < 0:
        name = _signal_name(-returncode)
        if -returncode == signal.SIGKILL:
            return StageOutcome("oom", {}, stage, f"killed by SIGKILL in stage {stage!r} (the kernel's "
                                                  "out-of-memory killer, or an outside kill)")
        return StageOutcome("crashed", {}, stage, f"the process died of {name} in stage {stage!r}")
    return StageOutcome("crashed", {}, stage, f"the process exited with code {returncode} in stage "
                                              f"{stage!r} without a result")


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------
# The grid

def _model_entry(path: str | os.PathLike) -> dict[str, Any]:
    """Describe one model argument: an ONNX file or an artifact folder, checked up front."""
    path = Path(path)
    if path.is_dir():
        artifact = open_artifact(path)
        manifest = (path / "manifest.json").read_bytes()
        return {"kind": "artifact", "name": path.name, "path": str(path.resolve()),
                "sha256": artifact.manifest.get("source", {}).get("sha256"),
                "artifact_sha256": hashlib.sha256(manifest).hexdigest(),
                "backend": artifact.backend, "precision": artifact.precision,
                "size_bytes": artifact.size_bytes}
    if not path.exists():
        raise InputError(f"{path} does not exist: give an .onnx model or an artifact folder", field=str(path))
    ir = load(path)
    return {"kind": "onnx", "name": path.stem, "path": str(path.resolve()), "sha256": ir.sha256,
            "inputs": [s.to_json() for s in ir.inputs]}


def _workload_spec(config: BenchConfig) -> dict[str, Any] | None:
    if config.workload and config.eval:
        raise InputError("give --workload or --eval, not both", field="workload")
    if config.eval:
        if not Path(config.eval).is_file():
            raise InputError(f"--eval {config.eval} does not exist", field="eval")
        return {"kind": "npz", "path": str(Path(config.eval).resolve())}
    if config.workload:
        from ..workloads import get_workload

        get_workload(config.workload)  # unknown names fail now, listing the valid ones
        return {"kind": "registered", "name": config.workload}
    return None


def _presets(config: BenchConfig, target) -> list:
    """The (backend, device) presets to bench: the target's, in its preference order.

    A target may list one backend on several devices (OpenVINO on NPU, GPU, CPU): each is a
    cell of its own. `--backends` keeps those backends' presets, or a bare one if the target has none.
    """
    from ..targets import BackendPreset

    entries = backend_entries()
    if not config.backends:
        return list(target.backends) or [BackendPreset("onnxruntime")]
    names = list(dict.fromkeys(str(b) for b in config.backends))
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise InputError(f"unknown backend(s) {unknown}; registered backends: {sorted(entries)}",
                         field="backends")
    chosen = []
    for name in names:
        matching = [p for p in target.backends if p.name == name]
        chosen += matching or [BackendPreset(name)]
    return chosen


def plan_cells(config: BenchConfig, target, fit) -> list[Cell]:
    """Expand models × backends × precisions into cells, each skipped with a reason if it cannot run."""
    if config.precisions:
        for p in config.precisions:
            if p != AUTO:
                Precision.parse(p)  # an unknown precision is an error listing the valid ones
    cells: list[Cell] = []
    for raw in config.models:
        model = _model_entry(raw)
        if model["kind"] == "artifact":
            from ..targets import BackendPreset

            pairs = [(BackendPreset(model["backend"]), model["precision"])]
        else:
            pairs = [(preset, p if p == AUTO else str(Precision.parse(p)))
                     for preset in _presets(config, target)
                     for p in (config.precisions or preset.precisions)]
        for preset, precision in pairs:
            label = preset.name + (f":{preset.device}" if preset.device else "")
            name = f"{model['name']}[{label}/{precision}@{target.name}]"
            options = {**dict(preset.options), **({"device": preset.device} if preset.device else {}),
                       **dict(config.options.get(preset.name, {}))}
            cell = Cell(name, model, preset.name, precision, options=options)
            cell.skip = _skip_reason(cell, target, fit, preset.device)
            cells.append(cell)
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two models share a name, so cells would collide: {duplicates}; rename one",
                         field="models")
    return cells


def _skip_reason(cell: Cell, target, fit, device: str | None = None) -> str | None:
    if fit.mode == "skipped":
        return fit.reason
    if target.backends and target.name != "host" and cell.backend not in target.backend_names:
        return (f"target {target.name} does not deploy with {cell.backend} (its backends: "
                f"{list(target.backend_names)}); no other backend is substituted")
    entry = backend_entries()[cell.backend]
    if entry.backend is None:
        return f"backend {cell.backend} failed to load: {entry.error}"
    status = entry.backend.available()
    if not status:
        return f"backend {cell.backend} is unavailable here: {status.reason}"
    capabilities = entry.backend.capabilities()
    if cell.precision != AUTO and Precision.parse(cell.precision) not in capabilities.precisions:
        return f"backend {cell.backend} does not offer {cell.precision} here"
    if device and capabilities.devices and not any(d == device or d.startswith(device + ".")
                                                   for d in capabilities.devices):
        return (f"{cell.backend} device {device} is not present here (present: {list(capabilities.devices)}); "
                "no other device is substituted")
    return None


def _limits(target, fit) -> Limits:
    """The target's threads and memory cap, applied when this machine is not the target."""
    if fit.mode != "emulated":
        return Limits()
    allowed = sorted(os.sched_getaffinity(0))
    cpus = tuple(allowed[:max(1, min(target.threads, len(allowed)))])
    return Limits(cpus=cpus, memory_bytes=target.memory_limit_bytes)


def _fingerprint(config: BenchConfig, cells: Sequence[Cell], target) -> dict[str, Any]:
    return {"cells": [c.name for c in cells], "models": {c.model["name"]: c.model.get("sha256") for c in cells},
            "protocol": dataclasses.asdict(config.protocol), "target": target.name,
            "workload": config.workload, "eval": str(config.eval) if config.eval else None,
            "options": {k: dict(v) for k, v in config.options.items()}}


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the grid and return the results document (also written to `config.out`).

    Raises:
        InputError: unknown backend, precision, target or workload; a bad model path; a journal
            from another run (without --resume, or with other settings).
    """
    from ..targets import fit as target_fit, get_target

    config.protocol.check()
    out = Path(config.out)
    target = get_target(config.target)
    fit = target_fit(target)
    workload = _workload_spec(config)
    cells = plan_cells(config, target, fit)
    timeouts = stage_timeouts(config.protocol, config.timeouts)

    journal = Journal(journal_path(out))
    fingerprint = _fingerprint(config, cells, target)
    done: dict[str, dict[str, Any]] = {}
    if config.resume and journal.exists():
        done = journal.read(fingerprint)
    elif journal.exists():
        raise ResultsError(f"{journal.path} holds an interrupted run; pass --resume to continue it or "
                           "delete the file to start again", field="resume")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        journal.start(fingerprint)

    context = RunContext(config, target, fit, workload, timeouts, _limits(target, fit),
                         started=_dt.datetime.now(_dt.UTC))
    context.baselines = _baselines([c.backend for c in cells if not c.skip], context)
    progress = _progress(len(cells), config.progress)
    try:
        for cell in cells:
            progress.set_description(cell.name)
            if cell.name not in done:
                record = run_cell(cell, context)
                journal.record(record)
                done[cell.name] = record
                write_results(out, assemble(context, cells, done, complete=False))
            progress.update(1)
    finally:
        progress.close()
        shutil.rmtree(context.workdir, ignore_errors=True)  # compiled artifacts and cell logs
    document = assemble(context, cells, done, complete=True)
    write_results(out, document)
    journal.remove()
    return document


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # a progress bar is a nicety, never a reason to fail
        enabled = False
    if not enabled:
        class _Silent:
            def set_description(self, _):
                pass

            def update(self, _):
                pass

            def close(self):
                pass
        return _Silent()
    return tqdm(total=total, unit="cell", file=sys.stderr, disable=None, dynamic_ncols=True)


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


def _baselines(backends: Sequence[str], context: RunContext) -> dict[str, Any]:
    """Import-only peak memory of each backend, in a process like a cell's."""
    found: dict[str, Any] = {}
    for backend in dict.fromkeys(backends):
        outcome = run_stage("baseline", {"backend": backend, "name": f"baseline[{backend}]"},
                            timeouts=context.timeouts, log=context.workdir / f"baseline-{backend}.log",
                            limits=context.limits)
        found[backend] = outcome.result if outcome.status == "ok" else {"status": outcome.status,
                                                                         "message": outcome.message}
    return found


def cell_folder_name(name: str) -> str:
    """A file-system-safe name for a cell's artifact folder and log in the run's workdir."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


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
            "options": cell.options, "target": target_json, "workload": context.workload}
    if cell.model["kind"] == "onnx":
        artifact_dir = context.workdir / safe
        spec = {**base, "model": cell.model, "artifact_dir": str(artifact_dir),
                "calibration": str(Path(config.calibration).resolve()) if config.calibration else None}
        compiled = run_stage("compile", spec, timeouts=context.timeouts, log=log)
        if compiled.status != "ok":
            return {**record, "status": compiled.status, "stage": compiled.stage, "message": compiled.message,
                    **({"traceback": compiled.result["traceback"]} if "traceback" in compiled.result else {})}
        record["cold_start"] = {"compile_s": compiled.result["compile_s"]}
        record["recipe"] = compiled.result.get("recipe")
        reference = cell.model["path"]
        reference_cache = {"path": str(context.workdir / f"reference-{cell.model['sha256'][:16]}.npz"),
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
        spec = {**base, "artifact_dir": str(artifact_dir), "load_options": cell.options,
                "protocol": dataclasses.asdict(protocol), "accuracy": repeat == 0,
                "reference": reference, "reference_cache": reference_cache, "dims": dict(config.dims)}
        outcome = run_stage("measure", spec, timeouts=context.timeouts, log=log, limits=context.limits)
        if outcome.status != "ok":
            return {**record, "status": outcome.status, "stage": outcome.stage, "message": outcome.message,
                    "repeats_done": repeat,
                    **({"traceback": outcome.result["traceback"]} if "traceback" in outcome.result else {})}
        runs.append(outcome.result)
    summary = _summarise(runs, context, cell)
    summary["cold_start"] = {**record["cold_start"], **summary["cold_start"]}
    return {**record, **summary}


def _summarise(runs: list[dict[str, Any]], context: RunContext, cell: Cell) -> dict[str, Any]:
    per_run = [r["latency"] for r in runs]
    stats, spread = aggregate(per_run)
    first = runs[0]
    summary: dict[str, Any] = {
        "status": "ok", "stats": stats, "spread": spread,
        "repeats": [{k: v for k, v in s.items() if k != "quantiles"} for s in per_run],
        "flags": ["unstable"] if is_unstable(stats, spread, context.config.protocol.max_cv) else [],
        "threads": first.get("threads"), "input_shapes": first.get("input_shapes"),
        **({"thread_choice_us": first["thread_choice_us"]} if first.get("thread_choice_us") else {}),
    }
    summary["cold_start"] = {
        "load_s": _median([r["load_s"] for r in runs]), "load_s_first": first["load_s"],
        "first_inference_s": _median([r["first_inference_s"] for r in runs]),
        "first_inference_s_first": first["first_inference_s"]}
    baseline = context.baselines.get(cell.backend, {})
    peaks = [r["peak_rss_bytes"] for r in runs]
    summary["memory"] = {"peak_rss_bytes": max(peaks), "peak_rss_bytes_median": _median(peaks),
                         "import_baseline_rss_bytes": baseline.get("import_rss_bytes"),
                         "python_baseline_rss_bytes": baseline.get("python_rss_bytes")}
    if baseline.get("import_rss_bytes"):
        summary["memory"]["model_rss_bytes"] = max(peaks) - baseline["import_rss_bytes"]
    if first.get("throughput"):
        summary["throughput"] = _median_throughput([r["throughput"] for r in runs])
    if first.get("end_to_end"):
        e2e_stats, e2e_spread = aggregate([r["end_to_end"] for r in runs])
        summary["end_to_end"] = {"stats": e2e_stats, "spread": e2e_spread}
    if first.get("device_latency"):
        summary["device_latency"] = {
            kind: {stat: _median([r["device_latency"][kind][stat] for r in runs]) for stat in ("p50", "p90", "p99")}
            for kind in first["device_latency"]}
    for key in ("accuracy", "agreement", "eval_samples"):
        if key in first:
            summary[key] = first[key]
    return summary


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _median_throughput(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if "items_per_s" not in runs[0]:
        return dict(runs[0])
    values = [r["items_per_s"] for r in runs]
    return {"batch": runs[0]["batch"], "items_per_s": _median(values),
            "items_per_s_min": min(values), "items_per_s_max": max(values),
            "batch_p50_s": _median([r["batch_p50_s"] for r in runs])}


# --------------------------------------------------------------------------------------------
# The document

def assemble(context: RunContext, cells: Sequence[Cell], done: Mapping[str, dict[str, Any]], *,
             complete: bool) -> dict[str, Any]:
    """The results document from the finished cells, with budgets and fp32 deltas derived."""
    from .. import __version__
    from ..hostinfo import host_summary
    from .provenance import commit_info

    config = context.config
    benchmarks = [dict(done[c.name]) for c in cells if c.name in done]
    _derive_accuracy_drop(benchmarks)
    for cell in benchmarks:
        cell["budgets"] = check_budgets(cell, context.target.budgets)
    return {
        "schema": SCHEMA, "complete": complete, "version": __version__,
        "datetime": context.started.isoformat(timespec="seconds"),
        "machine_info": host_summary(), "commit_info": commit_info(),
        "target": {**context.target.to_json(), "fit": context.fit.to_json(),
                   "emulated": context.fit.mode == "emulated",
                   "label": context.fit.reason if context.fit.mode == "emulated" else None,
                   "limits": context.limits.describe()},
        "settings": {"protocol": dataclasses.asdict(config.protocol), "timeouts": context.timeouts,
                     "workload": context.workload, "calibration": str(config.calibration) if config.calibration
                     else None, "options": {k: dict(v) for k, v in config.options.items()},
                     "argv": list(config.argv) if config.argv else None},
        "baselines": context.baselines,
        "benchmarks": benchmarks,
    }


def _derive_accuracy_drop(cells: list[dict[str, Any]]) -> None:
    """Accuracy drop of each cell against the fp32 cell of the same model (same backend first)."""
    fp32 = {}
    for cell in cells:
        if cell.get("precision") == "fp32" and cell.get("accuracy"):
            fp32.setdefault((cell["model"]["name"], cell["backend"]), cell)
            fp32.setdefault((cell["model"]["name"], None), cell)
    for cell in cells:
        metrics = cell.get("accuracy") or {}
        ref = fp32.get((cell["model"]["name"], cell["backend"])) or fp32.get((cell["model"]["name"], None))
        if not metrics or ref is None:
            continue
        cell["accuracy_drop"] = {k: ref["accuracy"][k] - v for k, v in metrics.items() if k in ref["accuracy"]}
        cell["accuracy_drop"]["reference"] = ref["name"]


def check_budgets(cell: Mapping[str, Any], budgets) -> dict[str, Any]:
    """Pass or fail per budget of the target; unchecked budgets are left out."""
    checks: dict[str, Any] = {}
    if cell.get("status") != "ok":
        return checks
    if budgets.p90_latency_ms is not None:
        value = cell["stats"]["p90"] * 1000
        checks["p90_latency_ms"] = {"limit": budgets.p90_latency_ms, "value": value,
                                    "pass": value <= budgets.p90_latency_ms}
    if budgets.peak_memory_bytes is not None:
        value = cell["memory"]["peak_rss_bytes"]
        checks["peak_memory_bytes"] = {"limit": budgets.peak_memory_bytes, "value": value,
                                       "pass": value <= budgets.peak_memory_bytes}
    metric = next(iter(cell.get("accuracy") or {}), None)
    if budgets.min_accuracy is not None and metric:
        value = cell["accuracy"][metric]
        checks["min_accuracy"] = {"metric": metric, "limit": budgets.min_accuracy, "value": value,
                                  "pass": value >= budgets.min_accuracy}
    drop = cell.get("accuracy_drop") or {}
    if budgets.max_accuracy_drop is not None and metric in drop:
        checks["max_accuracy_drop"] = {"metric": metric, "limit": budgets.max_accuracy_drop,
                                       "value": drop[metric], "pass": drop[metric] <= budgets.max_accuracy_drop}
    return checks


def budget_failures(document: Mapping[str, Any]) -> list[str]:
    """One line per broken budget, for `--gate`."""
    lines = []
    for cell in document["benchmarks"]:
        for name, check in (cell.get("budgets") or {}).items():
            if not check["pass"]:
                lines.append(f"{cell['name']}: {name} {check['value']:.4g} exceeds the limit {check['limit']:.4g}"
                             if name != "min_accuracy" else
                             f"{cell['name']}: {check['metric']} {check['value']:.4g} below {check['limit']:.4g}")
    return lines
