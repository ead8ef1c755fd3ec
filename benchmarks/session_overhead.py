"""Per-call overhead of edgeagent's Session.run over a bare onnxruntime InferenceSession.run.

Both sides call the *same* InferenceSession object (the one inside edgeagent's Session), so
the difference is exactly edgeagent's validation and dict handling. Blocks of calls alternate
between the two sides, the order flipping every repeat, and each figure is the median over
repeats of per-block medians: the shared, noisy machine affects both sides alike.

Targets: onnxruntime (issue 2) overhead at most 5% of p50 on a MiniLM-sized encoder (6 layers,
hidden 384, sequence 32) and at most 15 µs on a trivial model; openvino (issue 5) at most 20 µs
over a bare `InferRequest.infer(share_inputs=True)` on the trivial model.

    python benchmarks/session_overhead.py [--repeats 15] [--backends onnxruntime,openvino]

Needs the train extra (the encoder is a randomly initialised BERT built with transformers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeagent  # noqa: E402
from benchmarks._models import minilm_sized_encoder  # noqa: E402
from benchmarks._provenance import provenance  # noqa: E402
from tests import models  # noqa: E402

COMMAND = "python benchmarks/session_overhead.py"


def time_block(fn, calls: int) -> float:
    """Median seconds per call over one block."""
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e9


def bare_call(backend: str, session, feeds):
    """The SDK's own call on the very object inside edgeagent's Session."""
    if backend == "onnxruntime":
        ort_session, names = session.ort_session, [o.name for o in session.outputs]
        return lambda: ort_session.run(names, feeds)
    if backend == "openvino":
        request = session.request
        return lambda: request.infer(feeds, share_inputs=True)
    raise ValueError(f"no bare call for {backend}")


def measure(backend: str, session, feeds, *, calls: int, repeats: int, warmup: int) -> dict:
    bare_fn = bare_call(backend, session, feeds)

    def bare():
        bare_fn()

    def wrapped():
        session.run(feeds)

    for _ in range(warmup):
        bare()
        wrapped()
    bare_blocks, wrapped_blocks, overheads = [], [], []
    for r in range(repeats):
        order = (bare, wrapped) if r % 2 == 0 else (wrapped, bare)
        results = {fn.__name__: time_block(fn, calls) for fn in order}
        bare_blocks.append(results["bare"])
        wrapped_blocks.append(results["wrapped"])
        overheads.append(results["wrapped"] - results["bare"])
    bare_p50 = statistics.median(bare_blocks)
    overhead = statistics.median(overheads)
    return {
        "bare_p50_us": bare_p50 * 1e6,
        "edgeagent_p50_us": statistics.median(wrapped_blocks) * 1e6,
        "overhead_us": overhead * 1e6,
        "overhead_pct_of_p50": 100 * overhead / bare_p50,
        "overhead_us_min_max": [min(overheads) * 1e6, max(overheads) * 1e6],
        "calls_per_block": calls, "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if edgeagent.get_backend(b).available()]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = [("trivial", models.trivial_model(folder / "trivial.onnx"), 5000),
                 ("minilm_sized_seq32", minilm_sized_encoder(folder), 100)]
        for backend in backends:
            for label, path, calls in cases:
                artifact = edgeagent.compile(path, backend, "fp32", out=folder / f"{backend}-{label}")
                options = {"threads": args.threads} | ({"cache_dir": ""} if backend == "openvino" else {})
                with edgeagent.load_session(artifact, options=options) as session:
                    feeds = models.random_feeds(edgeagent.load(path), batch=1, sequence=32)
                    if "input_ids" in feeds:
                        feeds["input_ids"] = np.random.default_rng(0).integers(0, 30522, (1, 32)).astype(np.int64)
                        feeds["attention_mask"] = np.ones((1, 32), np.int64)
                        feeds["token_type_ids"] = np.zeros((1, 32), np.int64)
                    results[f"{backend}/{label}"] = {
                        **measure(backend, session, feeds, calls=calls, repeats=args.repeats,
                                  warmup=max(10, calls // 10)),
                        "threads": session.threads}
    report = {"benchmark": "session_overhead", "command": COMMAND, "results": results,
              "targets": {"onnxruntime/trivial_overhead_us_max": 15, "onnxruntime/minilm_overhead_pct_max": 5,
                          "openvino/trivial_overhead_us_max": 20},
              "provenance": provenance()}
    for label, row in results.items():
        print(f"{label:>32}: bare p50 {row['bare_p50_us']:9.1f} µs | edgeagent p50 "
              f"{row['edgeagent_p50_us']:9.1f} µs | overhead {row['overhead_us']:6.2f} µs "
              f"({row['overhead_pct_of_p50']:5.2f}% of p50; per-repeat range "
              f"{row['overhead_us_min_max'][0]:.2f}..{row['overhead_us_min_max'][1]:.2f} µs)")
    prov = report["provenance"]
    print(f"host: {prov['cpu']} ({prov['usable_cpus']} CPUs, flags "
          f"{','.join(k for k, v in prov['cpu_flags'].items() if v)}), onnxruntime "
          f"{prov['software']['onnxruntime']}, openvino {prov['software']['openvino']}, "
          f"commit {prov['commit']}")
    print(f"rerun: {COMMAND}")
    if args.out:
        from edgeagent.artifact import atomic_write_text

        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
