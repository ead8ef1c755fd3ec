"""Compare two results files cell by cell: the regression gate CI runs.

A latency regression counts only beyond the threshold *plus* the measured noise: the larger
of the two cells' spread of p50 across repeats. A slower p50 inside that band is reported as
noise, not failed, because on shared machines the same code moves that much between runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .results import primary_metric
from .stats import relative_spread


@dataclass
class CellDelta:
    name: str
    verdict: str  # ok | regression | improvement | noise | new | failing | other-hardware
    reasons: list[str] = field(default_factory=list)
    latency_pct: float | None = None
    noise_pct: float | None = None
    accuracy_points: float | None = None
    base_p50_ms: float | None = None
    new_p50_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _metric(cell: Mapping[str, Any]) -> tuple[str, float] | None:
    metric = primary_metric(cell)
    return None if metric is None else (metric, float(cell["accuracy"][metric]))


def compare_cells(base: Mapping[str, Any], new: Mapping[str, Any], *, max_latency_regression: float,
                  max_accuracy_drop: float, other_hardware: str | None = None) -> CellDelta:
    """Verdict for one cell; thresholds in percent and accuracy points.

    With `other_hardware` (why the CPUs differ), latency is reported but never gated.
    """
    delta = CellDelta(base["name"], "ok")
    if base["status"] != "ok" or new["status"] != "ok":
        if base["status"] == "ok":
            delta.verdict = "regression"
            delta.reasons.append(f"status ok → {new['status']}: {new.get('message') or ''}".strip(": "))
        elif new["status"] == "ok":
            delta.verdict = "improvement"
            delta.reasons.append(f"status {base['status']} → ok")
        else:
            delta.verdict = "failing" if new["status"] != "skipped" else "ok"
            delta.reasons.append(f"status {base['status']} → {new['status']}")
        return delta
    b, n = base["stats"]["p50"], new["stats"]["p50"]
    delta.base_p50_ms, delta.new_p50_ms = b * 1000, n * 1000
    delta.latency_pct = (n - b) / b * 100
    delta.noise_pct = 100 * max(relative_spread(base["stats"], base.get("spread")),
                                relative_spread(new["stats"], new.get("spread")))
    if other_hardware:
        delta.verdict = "other-hardware"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% not gated: {other_hardware}")
    elif delta.latency_pct > max_latency_regression + delta.noise_pct:
        delta.verdict = "regression"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% (limit {max_latency_regression:g}% + noise "
                             f"{delta.noise_pct:.1f}%)")
    elif delta.latency_pct > max_latency_regression:
        delta.verdict = "noise"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% is within the measured noise "
                             f"({delta.noise_pct:.1f}%)")
    elif delta.latency_pct < -(max_latency_regression + delta.noise_pct):
        delta.verdict = "improvement"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}%")
    base_metric, new_metric = _metric(base), _metric(new)
    if base_metric and new_metric and base_metric[0] == new_metric[0]:
        delta.accuracy_points = (new_metric[1] - base_metric[1]) * 100
        if -delta.accuracy_points > max_accuracy_drop:
            delta.verdict = "regression"
            delta.reasons.append(f"{base_metric[0]} {delta.accuracy_points:+.2f} points (limit "
                                 f"-{max_accuracy_drop:g})")
    elif base_metric and not new_metric:
        delta.verdict = "regression"
        delta.reasons.append(f"{base_metric[0]} is no longer measured")
    return delta


def hardware_difference(base: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why two files' latencies are not comparable (other CPU model or flags), or None."""
    b, n = base.get("machine_info", {}), new.get("machine_info", {})
    if b.get("cpu") != n.get("cpu"):
        return f"baseline ran on {b.get('cpu')!r}, these results on {n.get('cpu')!r}"
    if b.get("cpu_flags") != n.get("cpu_flags"):
        return "the CPUs' feature flags differ"
    return None


def compare(base: Mapping[str, Any], new: Mapping[str, Any], *, max_latency_regression: float = 10.0,
            max_accuracy_drop: float = 1.0, strict_hardware: bool = False) -> list[CellDelta]:
    """Deltas for every cell of either file; a cell missing from `new` is a regression.

    Latency only gates when both files come from the same CPU (or `strict_hardware`): a
    baseline from another machine still gates status and accuracy, and its latency deltas
    are reported as `other-hardware`.
    """
    difference = None if strict_hardware else hardware_difference(base, new)
    base_cells = {c["name"]: c for c in base["benchmarks"]}
    new_cells = {c["name"]: c for c in new["benchmarks"]}
    deltas = []
    for name in [*base_cells, *[n for n in new_cells if n not in base_cells]]:
        if name not in new_cells:
            if base_cells[name]["status"] == "skipped":
                continue
            deltas.append(CellDelta(name, "regression", ["missing from the new results"]))
        elif name not in base_cells:
            deltas.append(CellDelta(name, "new", ["no baseline"]))
        else:
            deltas.append(compare_cells(base_cells[name], new_cells[name],
                                        max_latency_regression=max_latency_regression,
                                        max_accuracy_drop=max_accuracy_drop, other_hardware=difference))
    return deltas
