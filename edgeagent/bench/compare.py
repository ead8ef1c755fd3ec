"""Compare two results files cell by cell: the regression gate CI runs.

Latency is gated on a statistic with a stated confidence: a percentile-bootstrap 95 % confidence
interval of the relative change in p50 (`scipy.stats.bootstrap`). A cell regresses only when the
whole interval lies above the threshold (95 % confident it slowed by more than that); a slower
p50 whose interval reaches below the threshold is `noise`. The samples bootstrapped are each
repeat's 101 stored latency quantiles, pooled across repeats: that keeps the spread between
repeats (on shared machines the same code moves between runs) and, standing in for thousands of
calls with 101 points per repeat, errs towards wider intervals, not false alarms.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .results import primary_metric
from .stats import relative_spread


CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass
class CellDelta:
    name: str
    verdict: str  # ok | regression | improvement | noise | new | failing | other-hardware
    reasons: list[str] = field(default_factory=list)
    latency_pct: float | None = None
    latency_ci_pct: tuple[float, float] | None = None  # CONFIDENCE interval of latency_pct
    confidence: float | None = None
    noise_pct: float | None = None  # min–max spread of p50 across repeats, reported, not gated
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
    low, high = p50_change_interval(base, new)
    delta.latency_ci_pct, delta.confidence = (low, high), CONFIDENCE
    interval = f"{CONFIDENCE:.0%} CI [{low:+.1f}%, {high:+.1f}%]"
    if other_hardware:
        delta.verdict = "other-hardware"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% ({interval}) not gated: {other_hardware}")
    elif low > max_latency_regression:
        delta.verdict = "regression"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}%, {interval} entirely above the limit "
                             f"{max_latency_regression:g}%")
    elif delta.latency_pct > max_latency_regression:
        delta.verdict = "noise"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% but {interval} reaches below the limit "
                             f"{max_latency_regression:g}%: not shown to be slower")
    elif high < -max_latency_regression:
        delta.verdict = "improvement"
        delta.reasons.append(f"p50 {delta.latency_pct:+.1f}% ({interval})")
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


def latency_units(cell: Mapping[str, Any]) -> list[np.ndarray]:
    """What the bootstrap resamples for a cell: its repeats (each as its 101 latency quantiles)
    where it has two or more, since between runs is where shared machines vary most; else the
    one run's quantile points (files written before repeats kept their quantiles), else its p50."""
    repeats = [np.asarray(r["quantiles"], dtype=np.float64) for r in cell.get("repeats") or [] if r.get("quantiles")]
    if len(repeats) >= 2:
        return repeats
    single = repeats[0] if repeats else np.asarray((cell.get("stats") or {}).get("quantiles")
                                                   or [cell["stats"]["p50"]], dtype=np.float64)
    return [np.asarray([value]) for value in single]


def p50_change_interval(base: Mapping[str, Any], new: Mapping[str, Any], *, confidence: float = CONFIDENCE,
                        resamples: int = RESAMPLES) -> tuple[float, float]:
    """The `confidence` interval (percentile bootstrap) of the relative change of median latency, in percent.

    Raises:
        InputError: scipy is not installed (`pip install 'edgeagent[stats]'`).
    """
    try:
        from scipy import stats as scipy_stats
    except ImportError:
        from ..errors import InputError

        raise InputError("compare's confidence intervals need scipy: pip install 'edgeagent[stats]'",
                         field="scipy") from None
    units_a, units_b = latency_units(base), latency_units(new)

    def change(i, j):
        x = np.concatenate([units_a[k] for k in np.asarray(i, dtype=int)])
        y = np.concatenate([units_b[k] for k in np.asarray(j, dtype=int)])
        return (float(np.median(y)) / float(np.median(x)) - 1) * 100

    point = change(range(len(units_a)), range(len(units_b)))
    if len(units_a) < 2 and len(units_b) < 2:
        return point, point  # one number on each side: nothing to resample
    seed = {"rng": np.random.default_rng(0)} if "rng" in inspect.signature(scipy_stats.bootstrap).parameters \
        else {"random_state": np.random.default_rng(0)}  # scipy before 1.15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a side whose resamples all agree is 'degenerate': the interval is then a point
        result = scipy_stats.bootstrap((np.arange(len(units_a)), np.arange(len(units_b))), change,
                                       n_resamples=resamples, confidence_level=confidence, method="percentile",
                                       vectorized=False, **seed)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (point, point) if np.isnan(low) or np.isnan(high) else (low, high)


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
