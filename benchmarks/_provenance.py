"""Provenance attached to every benchmark figure: host, versions, commit, time."""

from __future__ import annotations

from edgeagent.bench.provenance import commit_info, utc_now
from edgeagent.hostinfo import host_summary


def git_commit() -> str | None:
    info = commit_info()
    return None if info["id"] is None else info["id"] + ("-dirty" if info["dirty"] else "")


def provenance() -> dict:
    return {**host_summary(), "commit": git_commit(), "utc": utc_now()}
