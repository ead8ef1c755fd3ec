"""Where a result came from: the commit of the code that produced it, and when."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Any


def commit_info(repo: Path | None = None) -> dict[str, Any]:
    """pytest-benchmark's `commit_info`: id, dirty, branch of edgeagent's checkout where known.

    CI sets GITHUB_SHA; an installed (non-editable) edgeagent has no checkout, so `id` is None.
    """
    folder = repo or Path(__file__).resolve().parents[2]
    info: dict[str, Any] = {"id": os.environ.get("GITHUB_SHA"), "dirty": None, "branch": None,
                            "project": "edgeagent"}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return info
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=10)
        branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=folder,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return info
    info.update(id=head.stdout.strip(), dirty=bool(status.stdout.strip()), branch=branch.stdout.strip() or None)
    return info


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
