"""Reports from results files: a Markdown table, a CSV, and plots.

The plot puts each target's cells on latency against accuracy with the Pareto frontier marked
(nothing else is both faster and more accurate), beside the latency distribution of each cell.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .results import primary_metric
from .stats import robust_cv

COLUMNS = ("cell", "status", "p50_ms", "p90_ms", "p99_ms", "cv_stddev", "cv_robust", "load_ms", "first_ms",
           "peak_mib", "size_mib", "accuracy", "top1_agreement", "max_abs_diff", "drop_points", "budgets", "flags")
# What each spread column measures, printed under the table: the plain CV is dragged up by one
# descheduled call, so `unstable` reads the robust one.
SPREAD_LEGEND = ("cv_stddev = stddev / mean of per-call latency; cv_robust = IQR / 1.349 / median, the "
                 "measure the `unstable` flag uses (threshold max_cv, also applied to the min–max spread of p50 "
                 "across repeats)")


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _mib(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def cell_row(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The flat row a table or CSV shows for one cell."""
    stats = cell.get("stats") or {}
    cold = cell.get("cold_start") or {}
    accuracy = cell.get("accuracy") or {}
    metric = primary_metric(cell)
    agreement = cell.get("agreement") or {}
    drop = (cell.get("accuracy_drop") or {}).get(metric) if metric else None
    budgets = cell.get("budgets") or {}
    flags = list(cell.get("flags") or [])
    if cell.get("emulated"):
        flags.append("emulated")
    return {
        "cell": cell["name"], "status": cell["status"] if cell["status"] == "ok" else
        f"{cell['status']}: {cell.get('message') or ''}".strip(),
        "p50_ms": _ms(stats.get("p50")), "p90_ms": _ms(stats.get("p90")), "p99_ms": _ms(stats.get("p99")),
        "cv_stddev": stats.get("cv"), "cv_robust": robust_cv(stats) if stats else None,
        "load_ms": _ms(cold.get("load_s")), "first_ms": _ms(cold.get("first_inference_s")),
        "peak_mib": _mib((cell.get("memory") or {}).get("peak_rss_bytes")),
        "size_mib": _mib(cell.get("size_bytes")),
        "accuracy": f"{metric}={accuracy[metric]:.4f}" if metric else None,
        "top1_agreement": agreement.get("top1"), "max_abs_diff": agreement.get("max_abs_diff"),
        "drop_points": None if drop is None else drop * 100,
        "budgets": ("pass" if all(c["pass"] for c in budgets.values()) else "FAIL: " + ", ".join(
            k for k, c in budgets.items() if not c["pass"])) if budgets else None,
        "flags": ",".join(flags) or None,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def markdown_table(documents: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """One Markdown row per cell, with each file's provenance above its rows."""
    if isinstance(documents, Mapping):
        documents = [documents]
    parts = []
    for document in documents:
        machine = document.get("machine_info", {})
        target = document.get("target", {})
        flags = [k for k, v in (machine.get("cpu_flags") or {}).items() if v]
        commit = (document.get("commit_info") or {}).get("id")
        parts.append(f"**{target.get('name', '?')}** on {machine.get('cpu', '?')} "
                     f"({machine.get('usable_cpus', '?')} CPUs; flags: {', '.join(flags) or 'none'}) · "
                     f"edgeagent {document.get('version')} · commit {commit[:12] if commit else 'unknown'} · "
                     f"{document.get('datetime')}" + ("" if document.get("complete", True) else " · INCOMPLETE"))
        if target.get("emulated"):
            parts.append(f"> {target.get('label')}")
        header = "| " + " | ".join(COLUMNS) + " |"
        rows = [header, "|" + "---|" * len(COLUMNS)]
        for cell in document["benchmarks"]:
            row = cell_row(cell)
            rows.append("| " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |")
        parts.append("\n".join(rows))
        generation = generation_table(document)
        if generation:
            parts.append(generation)
    parts.append(f"_{SPREAD_LEGEND}._")
    return "\n\n".join(parts)


GENERATION_COLUMNS = ("cell", "prompt", "new", "ttft_ms", "tpot_ms", "decode_tok_s", "prefill_tok_s", "kv_mib")


def generation_rows(cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (prompt, new tokens) shape of a decoder cell (none for other cells)."""
    rows = []
    for shape in (cell.get("generation") or {}).get("shapes", []):
        rows.append({"cell": cell["name"], "prompt": shape["prompt_tokens"], "new": shape["new_tokens"],
                     "ttft_ms": _ms(shape.get("ttft_s")), "tpot_ms": _ms(shape.get("tpot_s")),
                     "decode_tok_s": shape.get("decode_tokens_per_s"),
                     "prefill_tok_s": shape.get("prefill_tokens_per_s"),
                     "kv_mib": _mib(shape.get("kv_cache_bytes")), "skipped": shape.get("skipped")})
    return rows


def generation_table(document: Mapping[str, Any]) -> str:
    """Decoder cells' per-shape figures: time to first token, per output token, tokens/s, KV cache."""
    rows = [r for cell in document["benchmarks"] if cell.get("status") == "ok" for r in generation_rows(cell)]
    if not rows:
        return ""
    lines = ["| " + " | ".join(GENERATION_COLUMNS) + " |", "|" + "---|" * len(GENERATION_COLUMNS)]
    for row in rows:
        values = [row[c] for c in GENERATION_COLUMNS]
        if row["skipped"]:
            values[3:] = [f"skipped: {row['skipped']}"] + ["–"] * (len(values) - 4)
        lines.append("| " + " | ".join(_fmt(v) for v in values) + " |")
    return "Generation (medians; ttft = prefill + first token, tpot = one decode step):\n\n" + "\n".join(lines)


def decode_tokens_per_second(cell: Mapping[str, Any]) -> float | None:
    """A decoder cell's decode tokens/s at its headline shape (what the plot's x axis shows)."""
    generation = cell.get("generation") or {}
    head = generation.get("headline") or {}
    for shape in generation.get("shapes", []):
        if (shape.get("prompt_tokens"), shape.get("new_tokens")) == (head.get("prompt_tokens"),
                                                                    head.get("new_tokens")):
            return shape.get("decode_tokens_per_s")
    return None



def write_csv(documents: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """One CSV row per cell, with the target and commit of its file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["target", "commit", *COLUMNS])
    writer.writeheader()
    for document in documents:
        for cell in document["benchmarks"]:
            writer.writerow({"target": document.get("target", {}).get("name"),
                             "commit": (document.get("commit_info") or {}).get("id"), **cell_row(cell)})
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and accuracy (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot(documents: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Latency against accuracy per target (Pareto frontier marked) and latency distributions.

    Raises:
        InputError: matplotlib is not installed (`pip install edgeagent[plot]`).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'edgeagent[plot]'", field="--plot") from None
    by_target: dict[str, list[Mapping[str, Any]]] = {}
    for document in documents:
        name = document.get("target", {}).get("name", "?")
        suffix = " (emulated)" if document.get("target", {}).get("emulated") else ""
        by_target.setdefault(name + suffix, []).extend(c for c in document["benchmarks"] if c["status"] == "ok")
    if not any(by_target.values()):
        raise InputError("no cell finished with status ok: nothing to plot", field="--plot")
    generative = {t: [c for c in cells if c.get("generation")] for t, cells in by_target.items()}
    generative = {t: cells for t, cells in generative.items() if cells}
    rows = len(by_target) + len(generative)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.6 * rows), squeeze=False)
    markers = {"onnxruntime": "o", "openvino": "s", "tensorrt": "^"}
    colours = {"fp32": "tab:blue", "fp16": "tab:green", "int8": "tab:red", "int4": "tab:purple"}
    for row, (target, cells) in enumerate(generative.items(), start=len(by_target)):
        _plot_generation(axes[row], target, cells, markers, colours)
    for row, (target, cells) in enumerate(by_target.items()):
        scatter, dist = axes[row]
        points, labels = [], []
        for cell in cells:
            accuracy = cell.get("accuracy") or {}
            metric = primary_metric(cell)
            if metric is None:
                continue
            x, y = cell["stats"]["p50"] * 1000, accuracy[metric]
            points.append((x, y))
            labels.append(cell)
            scatter.scatter(x, y, marker=markers.get(cell["backend"], "D"),
                            color=colours.get(cell["precision"], "tab:gray"), s=60, zorder=3)
            scatter.annotate(cell["model"]["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if points:
            front = sorted(pareto_front(points), key=lambda i: points[i][0])
            scatter.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                         color="black", linestyle="--", linewidth=1, label="Pareto frontier", zorder=2)
            scatter.set_xscale("log")
            scatter.set_ylabel(primary_metric(labels[0]))
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], marker=m, linestyle="", color="gray", label=b) for b, m in markers.items()]
            handles += [Line2D([], [], marker="o", linestyle="", color=c, label=p) for p, c in colours.items()]
            handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto frontier"))
            scatter.legend(handles=handles, fontsize=7, loc="lower right")
        else:
            scatter.text(0.5, 0.5, "no accuracy measured (bench with --eval or --workload)",
                         ha="center", va="center", transform=scatter.transAxes)
        scatter.set_xlabel("p50 latency (ms, log)")
        scatter.set_title(f"{target}: latency vs accuracy")
        scatter.grid(True, which="both", alpha=0.3)
        for cell in cells:
            quantiles = [q * 1000 for q in cell["stats"]["quantiles"]]
            fractions = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
            dist.plot(quantiles, fractions, label=f"{cell['model']['name']} {cell['backend']}/{cell['precision']}",
                      color=colours.get(cell["precision"]),
                      linestyle={"onnxruntime": "-", "openvino": "--", "tensorrt": ":"}.get(cell["backend"], "-."))
        dist.set_xscale("log")
        dist.set_xlabel("latency per call (ms, log)")
        dist.set_ylabel("fraction of calls (ECDF)")
        dist.set_title(f"{target}: latency distribution")
        dist.grid(True, which="both", alpha=0.3)
        dist.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_generation(axes, target: str, cells: Sequence[Mapping[str, Any]], markers, colours) -> None:
    """Decoder cells: decode tokens/s against token agreement (Pareto: faster and more faithful),
    and time to first token against prompt length per cell."""
    scatter, ttft = axes
    points = []
    for cell in cells:
        x, y = decode_tokens_per_second(cell), (cell.get("accuracy") or {}).get("token_agreement")
        if x is None or y is None:
            continue
        points.append((x, y))
        scatter.scatter(x, y, marker=markers.get(cell["backend"], "D"), color=colours.get(cell["precision"], "tab:gray"),
                        s=60, zorder=3)
        scatter.annotate(f"{cell['backend']}/{cell['precision']}", (x, y), textcoords="offset points",
                         xytext=(5, 4), fontsize=7)
    if points:
        front = sorted(pareto_front([(-x, y) for x, y in points]), key=lambda i: points[i][0])
        scatter.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", linestyle="--",
                     linewidth=1, zorder=2, label="Pareto frontier")
        scatter.legend(fontsize=7, loc="lower left")
    else:
        scatter.text(0.5, 0.5, "no agreement measured (bench a decoder IR folder, or pass --reference)",
                     ha="center", va="center", transform=scatter.transAxes)
    scatter.set_xlabel("decode tokens/s at the headline shape (higher is better)")
    scatter.set_ylabel("greedy token agreement with float32")
    scatter.set_title(f"{target}: decoders, tokens/s vs agreement")
    scatter.grid(True, alpha=0.3)
    for cell in cells:
        by_new: dict[int, list[tuple[int, float]]] = {}
        for shape in cell["generation"]["shapes"]:
            if shape.get("ttft_s") is not None:
                by_new.setdefault(shape["new_tokens"], []).append((shape["prompt_tokens"], shape["ttft_s"] * 1000))
        if by_new:
            new = min(by_new)
            xs, ys = zip(*sorted(by_new[new]))
            ttft.plot(xs, ys, marker=markers.get(cell["backend"], "D"), color=colours.get(cell["precision"]),
                      label=f"{cell['backend']}/{cell['precision']}")
    ttft.set_xscale("log", base=2)
    ttft.set_xlabel("prompt tokens")
    ttft.set_ylabel("time to first token (ms)")
    ttft.set_title(f"{target}: decoders, time to first token")
    ttft.grid(True, which="both", alpha=0.3)
    ttft.legend(fontsize=7)


# --------------------------------------------------------------------------------------------
# pytest-benchmark's format

def to_pytest_benchmark(documents: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Results in pytest-benchmark's JSON layout, which `pytest-benchmark compare` reads, and the
    cells that could not be converted (every cell not ok: it has no timings), with why.

    Each ok cell becomes one benchmark: `group` is the target, `name` the cell, `stats` its
    per-call latency in seconds (medians across repeats, as in the native file). pytest-benchmark
    counts outliers over raw samples; edgeagent keeps 101 quantiles of the median repeat, so the
    outlier counts are estimated from them (`extra_info.outliers_from`). The native JSON stays
    the source of truth.
    """
    if not documents:
        raise InputError("no results to convert", field="results")
    first = documents[0]
    machine = first.get("machine_info") or {}
    benchmarks, skipped = [], []
    for document in documents:
        target = (document.get("target") or {}).get("name", "?")
        protocol = (document.get("settings") or {}).get("protocol") or {}
        for cell in document["benchmarks"]:
            if cell.get("status") != "ok" or not cell.get("stats"):
                skipped.append({"name": cell.get("name"), "status": cell.get("status"), "message": cell.get("message"),
                                "target": target})
                continue
            benchmarks.append({
                "group": target, "name": cell["name"], "fullname": f"edgeagent::{target}::{cell['name']}",
                "params": None, "param": None,
                "extra_info": {"backend": cell.get("backend"), "precision": cell.get("precision"),
                               "emulated": cell.get("emulated"), "primary_metric": primary_metric(cell),
                               "accuracy": cell.get("accuracy"), "size_bytes": cell.get("size_bytes"),
                               "peak_rss_bytes": (cell.get("memory") or {}).get("peak_rss_bytes"),
                               "p90": cell["stats"].get("p90"), "p99": cell["stats"].get("p99"),
                               "outliers_from": "101 quantiles of the median repeat"},
                "options": {"disable_gc": False, "timer": "perf_counter_ns",
                            "min_rounds": protocol.get("min_calls"), "max_time": None,
                            "min_time": protocol.get("min_time_s"), "warmup": bool(protocol.get("warmup_calls")),
                            "precision": None, "confidence": None},
                "stats": _pytest_benchmark_stats(cell["stats"]),
            })
    software = machine.get("software") or {}
    converted = {
        "machine_info": {"node": machine.get("node", ""), "processor": machine.get("cpu", ""),
                         "machine": machine.get("machine", ""), "python_compiler": "",
                         "python_implementation": "CPython", "python_implementation_version": software.get("python"),
                         "python_version": software.get("python"), "python_build": [], "release": "",
                         "system": machine.get("system", ""), "cpu": {"brand_raw": machine.get("cpu", ""),
                                                                      "flags": [k for k, v in (machine.get("cpu_flags")
                                                                                               or {}).items() if v]}},
        "commit_info": {"id": (first.get("commit_info") or {}).get("id") or "unversioned", "time": None,
                        "author_time": None, "dirty": bool((first.get("commit_info") or {}).get("dirty")),
                        "project": "edgeagent", "branch": (first.get("commit_info") or {}).get("branch") or "(unknown)"},
        "benchmarks": benchmarks, "datetime": first.get("datetime"), "version": "5.1.0",
        "edgeagent": {"schema": first.get("schema"), "not_converted": skipped},
    }
    return converted, skipped


def _pytest_benchmark_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np

    q1, q3, iqr = float(stats["q1"]), float(stats["q3"]), float(stats["iqr"])
    quantiles = np.asarray(stats.get("quantiles") or [], dtype=np.float64)
    rounds = int(stats["rounds"])
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    mean, stddev = float(stats["mean"]), float(stats["stddev"])
    if quantiles.size:
        share = (lambda mask: int(round(float(mask.mean()) * rounds)))
        iqr_outliers = share((quantiles < low_fence) | (quantiles > high_fence))
        stddev_outliers = share((quantiles < mean - stddev) | (quantiles > mean + stddev))
        inside = quantiles[(quantiles >= low_fence) & (quantiles <= high_fence)]
        ld15, hd15 = (float(inside.min()), float(inside.max())) if inside.size else (float(stats["min"]), float(stats["max"]))
    else:
        iqr_outliers = stddev_outliers = 0
        ld15, hd15 = float(stats["min"]), float(stats["max"])
    return {"min": float(stats["min"]), "max": float(stats["max"]), "mean": mean, "stddev": stddev,
            "rounds": rounds, "median": float(stats["median"]), "iqr": iqr, "q1": q1, "q3": q3,
            "iqr_outliers": iqr_outliers, "stddev_outliers": stddev_outliers,
            "outliers": f"{stddev_outliers};{iqr_outliers}", "ld15iqr": ld15, "hd15iqr": hd15,
            "ops": float(stats["ops"]), "total": float(stats["total"]), "iterations": 1}
