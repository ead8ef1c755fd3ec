"""Benchmark a model on labelled data, report it and gate a second run against the first.

    python examples/bench_report_compare.py [--workdir DIR]

Each cell compiles and runs in its own processes; the results file is versioned JSON. Needs
`pip install "edgeagent[cpu,stats]"` (scipy for compare's confidence intervals).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgeagent.bench import BenchConfig, BenchProtocol, run_bench
from edgeagent.bench.compare import compare
from edgeagent.bench.report import markdown_table
from edgeagent.examples import CLASSES, FEATURES, tiny_classifier
from edgeagent.ir import save_proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgeagent-example-"))
    model = save_proto(tiny_classifier(), work / "classifier.onnx").path

    # Labelled evaluation data: one array per model input plus `labels` (here the model's own
    # fp32 answers, so accuracy reads as agreement with fp32).
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, FEATURES)).astype(np.float32)
    import onnxruntime

    labels = onnxruntime.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(1)
    np.savez(work / "eval.npz", x=x, labels=labels)
    assert labels.max() < CLASSES

    quick = BenchProtocol(repeats=2, min_calls=50, min_time_s=0.2, warmup_calls=5, batch=8)
    runs = []
    for name in ("base", "new"):
        runs.append(run_bench(BenchConfig(models=[model], out=work / f"{name}.json", eval=work / "eval.npz",
                                          backends=["onnxruntime"], precisions=["fp32", "int8"], protocol=quick,
                                          progress=False)))
    print(markdown_table(runs[-1]))
    for delta in compare(*runs, max_latency_regression=10, max_accuracy_drop=1):
        print(f"{delta.name}: {delta.verdict} — {'; '.join(delta.reasons) or 'within the thresholds'}")


if __name__ == "__main__":
    main()
