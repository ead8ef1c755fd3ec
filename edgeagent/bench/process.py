"""One bench stage in its own process, watched: a crash, hang or memory blow-up becomes a status.

The parent spawns `python -m edgeagent.bench.worker MODE SPEC FD`, reads its JSON events from a
pipe (so SDK chatter on stdout cannot corrupt them), applies each stage's timeout and the
memory cap, and classifies how the process ended.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._proc import proc_field_bytes
from ..errors import InputError
from .config import BenchProtocol

WORKER = "edgeagent.bench.worker"


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
    """Run one worker process and classify how it ended (a process that cannot start is an error)."""
    # The spec goes beside the log, in the run's own folder, so that a killed run leaves nothing
    # in $TMPDIR.
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8",
                                     dir=log.parent, prefix=".spec-") as handle:
        json.dump(spec, handle, default=str)
        spec_path = handle.name
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    try:
        try:
            with open(log, "ab") as log_handle:
                proc = subprocess.Popen(
                    [sys.executable, "-m", WORKER, mode, spec_path, str(write_fd)], pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle, start_new_session=True,
                    preexec_fn=limits.preexec(), env={**os.environ, **(env or {})})
        except (OSError, subprocess.SubprocessError) as exc:  # e.g. a limit the kernel refuses in preexec_fn
            return StageOutcome("error", {}, "start", f"the cell's process could not start: {exc}",
                                time.perf_counter() - start)
        finally:
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
