"""Budgets: a target's limits checked per cell, and the gate `bench --gate` and `matrix run` apply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .results import primary_metric

# Statuses that mean a cell did not run to the end. A gate passes only cells that ran: a crash at
# load is not "within budget".
FAILED_STATUSES = ("error", "crashed", "timeout", "oom")


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
    metric = primary_metric(cell)
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


def gate(document: Mapping[str, Any], *, require_measured: bool = True) -> tuple[list[str], list[str]]:
    """What `--gate` decides on: (failures, notes), one line each.

    Failures are every cell that errored, crashed, timed out or ran out of memory, every broken
    budget, and (with `require_measured`, default True) a run in which no cell was measured at
    all. Notes say what the gate could not check: a target with no budgets, skipped cells.
    """
    cells = document["benchmarks"]
    failures = [f"{c['name']}: {c['status']} in stage {c.get('stage') or 'unknown'}: "
                f"{c.get('message') or 'no message'}" for c in cells if c.get("status") in FAILED_STATUSES]
    failures += budget_failures(document)
    notes = []
    if not any(c.get("status") == "ok" for c in cells):
        (failures if require_measured else notes).append(
            "no cell was measured (every cell was skipped or failed), so nothing passed")
    target = document.get("target") or {}
    if not any(v is not None for v in (target.get("budgets") or {}).values()):
        notes.append(f"target {target.get('name', '?')!r} sets no budgets: the gate checked only that every "
                     "cell ran; add [budgets] to its profile to gate latency, memory and accuracy")
    skipped = [c["name"] for c in cells if c.get("status") == "skipped"]
    if skipped:
        notes.append(f"{len(skipped)} cell(s) skipped here and not gated: {', '.join(skipped)}")
    return failures, notes
