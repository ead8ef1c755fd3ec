"""Provenance attached to every benchmark figure: host, versions, commit, time."""

from __future__ import annotations

import datetime as _dt
import subprocess
from pathlib import Path

from edgeagent.hostinfo import host_summary


def git_commit(repo: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo or Path(__file__).parent,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    return {**host_summary(), "commit": git_commit(),
            "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
