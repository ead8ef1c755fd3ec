"""Latency statistics, aggregation across repeats, the Pareto frontier and compare's verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.bench.compare import compare_cells
from edgeagent.bench.report import pareto_front
from edgeagent.bench.stats import aggregate, is_unstable, latency_stats, relative_spread
from edgeagent.errors import InternalError


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(0)
    samples = (rng.lognormal(mean=12, sigma=0.3, size=5000)).astype(np.int64)
    stats = latency_stats(samples.tolist())
    seconds = samples / 1e9
    assert stats["rounds"] == 5000
    assert stats["p50"] == pytest.approx(np.median(seconds))
    assert stats["p90"] == pytest.approx(np.percentile(seconds, 90))
    assert stats["p99"] == pytest.approx(np.percentile(seconds, 99))
    assert stats["min"] == pytest.approx(seconds.min()) and stats["max"] == pytest.approx(seconds.max())
    assert stats["cv"] == pytest.approx(seconds.std(ddof=1) / seconds.mean())
    assert len(stats["quantiles"]) == 101 and stats["quantiles"][50] == pytest.approx(stats["p50"])
    assert stats["quantiles"] == sorted(stats["quantiles"])


def test_latency_stats_rejects_no_samples():
    # A timed loop with no call is edgeagent's own bug, never the user's input.
    with pytest.raises(InternalError, match="no samples"):
        latency_stats([])
    with pytest.raises(InternalError):
        aggregate([])


def test_aggregate_takes_medians_and_spread_across_repeats():
    runs = [latency_stats([t] * 10) for t in (1000, 3000, 2000)]
    stats, spread = aggregate(runs)
    assert stats["p50"] == pytest.approx(2e-6)
    assert spread["p50"] == {"min": pytest.approx(1e-6), "max": pytest.approx(3e-6)}
    assert stats["rounds"] == 30
    assert relative_spread(stats, spread) == pytest.approx(1.0)


def test_unstable_flags_noisy_runs_but_not_one_outlier():
    steady = latency_stats([1000] * 999 + [50_000])  # one descheduled call
    assert not is_unstable(steady, None, 0.10)
    noisy = latency_stats(list(np.random.default_rng(1).integers(500, 1500, 1000)))
    assert is_unstable(noisy, None, 0.10)
    stats, spread = aggregate([latency_stats([1000] * 50), latency_stats([1500] * 50)])
    assert is_unstable(stats, spread, 0.10)


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.80), (2.0, 0.90), (1.5, 0.85), (3.0, 0.88), (0.5, 0.70), (2.5, 0.90)]
    assert sorted(pareto_front(points)) == [0, 1, 2, 4]


def _cell(p50, spread=0.0, accuracy=0.95, status="ok", repeats=3, jitter=0.02):
    """A cell of `repeats` runs whose medians sit spread apart (relative), each run's 101 latency
    quantiles spanning ±jitter around its median."""
    shifts = np.linspace(1 - spread / 2, 1 + spread / 2, repeats)
    runs = [{"p50": p50 * k, "quantiles": list(p50 * k * (1 + jitter * np.linspace(-1, 1, 101)))} for k in shifts]
    stats = {"p50": p50, "quantiles": runs[len(runs) // 2]["quantiles"]}
    return {"name": "m[onnxruntime/fp32@host]", "status": status, "stats": stats, "repeats": runs,
            "spread": {"p50": {"min": p50 * shifts[0], "max": p50 * shifts[-1]}},
            "accuracy": {"accuracy": accuracy}}


@pytest.mark.parametrize("base, new, verdict", [
    (_cell(1e-3), _cell(1.05e-3), "ok"),
    (_cell(1e-3), _cell(1.2e-3), "regression"),                        # 95 % CI about [+19, +21] %
    (_cell(1e-3, spread=0.2), _cell(1.2e-3, spread=0.2), "noise"),     # repeats 20 % apart: CI reaches below 10 %
    (_cell(1e-3), _cell(0.5e-3), "improvement"),
    (_cell(1e-3), _cell(1e-3, accuracy=0.93), "regression"),          # -2 points
    (_cell(1e-3), _cell(1e-3, status="crashed"), "regression"),
    (_cell(1e-3, repeats=1), _cell(1.2e-3, repeats=1), "regression"),  # one run each: within-run quantiles
])
def test_compare_verdicts(base, new, verdict):
    pytest.importorskip("scipy", reason="compare's confidence intervals need the stats extra")
    assert compare_cells(base, new, max_latency_regression=10, max_accuracy_drop=1).verdict == verdict


def test_the_gate_states_its_confidence_interval():
    pytest.importorskip("scipy", reason="compare's confidence intervals need the stats extra")
    delta = compare_cells(_cell(1e-3, spread=0.2), _cell(1.2e-3, spread=0.2), max_latency_regression=10,
                          max_accuracy_drop=1)
    low, high = delta.latency_ci_pct
    assert delta.confidence == 0.95 and low < 10 < 20 < high  # the point estimate sits inside
    assert "95% CI" in delta.reasons[0]
    tight = compare_cells(_cell(1e-3), _cell(1.2e-3), max_latency_regression=10, max_accuracy_drop=1)
    assert 10 < tight.latency_ci_pct[0] <= tight.latency_ci_pct[1] < 30  # identical repeats: a narrow interval
    # The same files give the same interval: the bootstrap is seeded.
    assert compare_cells(_cell(1e-3, spread=0.2), _cell(1.2e-3, spread=0.2), max_latency_regression=10,
                         max_accuracy_drop=1).latency_ci_pct == delta.latency_ci_pct
