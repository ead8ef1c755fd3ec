"""ONNX Runtime graph fusions, side by side: which ones pay on a CPU, per model and precision.

Compiles each model through the onnxruntime backend three ways and times them interleaved:
  default          attention fused (dynamo exports included: backends.onnxruntime.split_unsqueezes),
                   Add + LayerNormalization left alone (skip_layer_norm=false)
  skip_layer_norm  the same plus SkipLayerNormalization, at compile and at load
  no_fusions       the graph as exported (fusions=off, skip_layer_norm=false)
Each figure is the median over rounds of per-round medians; rounds rotate through the variants,
so the shared machine's drift hits them alike. Inputs are the ha-intents workload's utterances
for models with input_ids (a real sentence length), else synthetic feeds.

This is the evidence behind the backend's default `skip_layer_norm=false`.

    python benchmarks/ort_fusions.py MODEL.onnx [MODEL.onnx ...] [--precisions fp32,int8]
        [--threads 1] [--rounds 15] [--out results/ort_fusions.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeagent  # noqa: E402
from benchmarks._provenance import provenance  # noqa: E402
from edgeagent.bench.worker import _timed_loop  # noqa: E402  (the bench's own timing loop)
from edgeagent.data import synthetic_feeds  # noqa: E402

COMMAND = "python benchmarks/ort_fusions.py"
VARIANTS = {
    "default": {},
    "skip_layer_norm": {"skip_layer_norm": True},
    "no_fusions": {"fusions": "off"},
}


def timing_feeds(session, count: int = 32) -> list[dict]:
    if any(s.name == "input_ids" for s in session.inputs):
        from edgeagent.workloads import ha_intents

        return ha_intents.HAIntents(split="test").timing_feeds(session.inputs, count)
    return [synthetic_feeds(session.inputs, seed=i) for i in range(4)]


def block_median(session, feeds: list[dict], calls: int) -> float:
    """Median µs per call over `calls` calls cycling through `feeds`, timed as `edgeagent bench` times."""
    return statistics.median(_timed_loop(session.run, feeds, min_calls=calls, min_time_s=0.0)) / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=0, help="calls per round (default: about 50 ms)")
    parser.add_argument("--out", type=Path, default=Path("results/ort_fusions.json"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ort-fusions-") as work:
        for model in args.models:
            for precision in args.precisions.split(","):
                sessions, recipes = {}, {}
                for name, options in VARIANTS.items():
                    options = {**options, **({"int8": "dynamic"} if precision == "int8" else {})}
                    artifact = edgeagent.compile(model, "onnxruntime", precision, options=options,
                                                 out=Path(work) / f"{len(rows)}-{model.stem}-{precision}-{name}")
                    recipes[name] = artifact.recipe.get("fusions")
                    sessions[name] = edgeagent.load_session(artifact, options={"threads": args.threads})
                feeds = timing_feeds(sessions["default"])
                calls = args.calls or max(20, int(0.05 / max(1e-6, block_median(sessions["default"], feeds, 20) / 1e6)))
                medians: dict[str, list[float]] = {name: [] for name in sessions}
                order = list(sessions)
                for round_ in range(args.rounds):
                    for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                        block_median(sessions[name], feeds, max(3, calls // 10))  # warm this variant
                        medians[name].append(block_median(sessions[name], feeds, calls))
                p50 = {name: statistics.median(values) for name, values in medians.items()}
                for name, session in sessions.items():
                    session.close()
                    rows.append({"model": str(model), "precision": precision, "variant": name,
                                 "p50_us": round(p50[name], 1), "vs_default": round(p50[name] / p50["default"], 3),
                                 "fused_ops": (recipes[name] or {}).get("fused_ops", {}),
                                 "rounds_us": [round(v, 1) for v in medians[name]]})
    document = {"benchmark": "ort_fusions", "command": COMMAND, "argv": sys.argv[1:], "threads": args.threads,
                "rounds": args.rounds, "provenance": provenance(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print("| model | precision | variant | p50 µs | vs default | fused ops |\n|---|---|---|---|---|---|")
    for row in rows:
        fused = ", ".join(f"{k}×{v}" for k, v in sorted(row["fused_ops"].items())) or "–"
        print(f"| {row['model']} | {row['precision']} | {row['variant']} | {row['p50_us']} | "
              f"{row['vs_default']:.3f} | {fused} |")
    print(f"\n{args.threads} thread(s), {args.rounds} interleaved rounds · commit {document['provenance']['commit']} · "
          f"{document['provenance']['utc']}\nrerun: {COMMAND} {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
