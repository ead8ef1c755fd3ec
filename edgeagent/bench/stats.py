"""Latency statistics for one run and their aggregation across repeated runs.

Names follow pytest-benchmark's `stats` (min, max, mean, stddev, median, rounds, ops) with
p90/p99 and the coefficient of variation added. All times are seconds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InternalError

# Quantiles kept per run so `report` can draw latency distributions without raw samples.
QUANTILE_POINTS = 101


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (the mean of the middle two for an even count)."""
    if not values:
        raise InternalError("median of no values: a run produced no measurements")
    return float(statistics.median(values))


def median_throughput(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Throughput across repeats: the median items/s with its min and max."""
    if "items_per_s" not in runs[0]:
        return dict(runs[0])
    values = [r["items_per_s"] for r in runs]
    return {"batch": runs[0]["batch"], "items_per_s": median(values),
            "items_per_s_min": min(values), "items_per_s_max": max(values),
            "batch_p50_s": median([r["batch_p50_s"] for r in runs])}


def latency_stats(samples_ns: Sequence[int]) -> dict[str, Any]:
    """Summary statistics of per-call times given in nanoseconds."""
    if not samples_ns:
        raise InternalError("latency statistics of no samples: the timed loop ran no call")
    s = np.asarray(samples_ns, dtype=np.float64) / 1e9
    mean = float(s.mean())
    stddev = float(s.std(ddof=1)) if len(s) > 1 else 0.0
    q1, median, q3, p90, p99 = (float(v) for v in np.percentile(s, [25, 50, 75, 90, 99]))
    return {
        "rounds": int(len(s)), "min": float(s.min()), "max": float(s.max()), "mean": mean,
        "stddev": stddev, "median": median, "p50": median, "p90": p90, "p99": p99,
        "q1": q1, "q3": q3, "iqr": q3 - q1, "cv": stddev / mean if mean > 0 else 0.0,
        "ops": 1.0 / mean if mean > 0 else 0.0, "total": float(s.sum()),
        "quantiles": [float(v) for v in np.percentile(s, np.linspace(0, 100, QUANTILE_POINTS))],
    }


AGGREGATED = ("min", "max", "mean", "stddev", "median", "p50", "p90", "p99", "q1", "q3", "iqr", "cv",
              "ops")


def aggregate(runs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Median of each statistic across repeats, and each statistic's min–max across them.

    Returns:
        (stats, spread): stats as `latency_stats` gives (quantiles taken from the median run),
        and spread[name] = {"min": ..., "max": ...} across repeats.
    """
    if not runs:
        raise InternalError("no runs to aggregate")
    stats: dict[str, Any] = {}
    spread: dict[str, dict[str, float]] = {}
    for name in AGGREGATED:
        values = [float(r[name]) for r in runs]
        stats[name] = median(values)
        spread[name] = {"min": min(values), "max": max(values)}
    stats["rounds"] = int(sum(int(r["rounds"]) for r in runs))
    stats["total"] = float(sum(float(r["total"]) for r in runs))
    middle = sorted(runs, key=lambda r: r["p50"])[(len(runs) - 1) // 2]
    stats["quantiles"] = list(middle["quantiles"])
    return stats, spread


def relative_spread(stats: Mapping[str, Any], spread: Mapping[str, Mapping[str, float]] | None,
                    name: str = "p50") -> float:
    """How far repeats disagree on `name`, relative to its median (0 for a single repeat)."""
    if not spread or name not in spread or not stats.get(name):
        return 0.0
    return (spread[name]["max"] - spread[name]["min"]) / float(stats[name])


def robust_cv(stats: Mapping[str, Any]) -> float:
    """IQR / 1.349 / median: the CV a normal distribution would have, unmoved by a few outliers."""
    median = float(stats.get("median") or 0.0)
    return float(stats.get("iqr", 0.0)) / 1.349 / median if median > 0 else 0.0


def is_unstable(stats: Mapping[str, Any], spread: Mapping[str, Mapping[str, float]] | None,
                max_cv: float) -> bool:
    """Unstable when calls within a run vary beyond `max_cv`, or repeats disagree beyond it.

    The within-run test uses the IQR relative to the median (a robust CV), since one
    descheduled call on a shared machine inflates the plain CV without moving the median.
    """
    return robust_cv(stats) > max_cv or relative_spread(stats, spread) > max_cv
