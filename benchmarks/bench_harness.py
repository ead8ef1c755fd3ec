"""The bench harness measured against itself: fidelity, wall time, and the backend grid.

1. Fidelity (issue 3): the p50 `edgeagent bench` reports for an artifact, against a bare
   `perf_counter_ns` loop over a Session of the same artifact in this process, with the same
   inputs. Bare loops run before and after each bench run (interleaved) and the figure is the
   ratio of medians. Target: within 3%.
2. Wall time (issue 3): `edgeagent bench` with default settings (3 repeats, ≥100 calls and
   ≥1 s per run) on fp32 and int8 of a MiniLM-sized encoder on onnxruntime and openvino.
   Target: under 3 minutes on a 2-core machine.
3. The grid (issue 5): onnxruntime and openvino side by side for fp32, fp16 and int8, with the
   CPU flags beside the table: whether NNCF INT8 beats fp32 on this CPU is measured, not assumed.

The encoder has all-MiniLM-L6-v2's shape with random weights; its eval set is 128 random
token sequences (length 32) labelled by the fp32 model itself, so "accuracy" here is top-1
agreement with fp32 on that set. Needs the train and openvino extras.

    python benchmarks/bench_harness.py [--out results/bench_harness.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeagent  # noqa: E402
from benchmarks._models import minilm_sized_encoder  # noqa: E402
from benchmarks._provenance import provenance  # noqa: E402
from edgeagent.bench import load_results  # noqa: E402
from edgeagent.bench.report import markdown_table  # noqa: E402

COMMAND = "python benchmarks/bench_harness.py"
SEQUENCE, SAMPLES = 32, 128


def eval_set(model: Path, folder: Path) -> Path:
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 30522, (SAMPLES, SEQUENCE)).astype(np.int64),
             "attention_mask": np.ones((SAMPLES, SEQUENCE), np.int64),
             "token_type_ids": np.zeros((SAMPLES, SEQUENCE), np.int64)}
    with edgeagent.load_session(edgeagent.compile(model, "onnxruntime", "fp32")) as session:
        labels = session.run(feeds)["logits"].argmax(-1)
    path = folder / "eval.npz"
    np.savez(path, **feeds, labels=labels)
    return path


def bench(args: list[str]) -> tuple[float, dict]:
    out = Path(args[args.index("--out") + 1])
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgeagent.cli.main", "bench", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, load_results(out)


def bare_p50(session, feeds: list[dict], calls: int) -> float:
    samples = []
    for i in range(calls):
        f = feeds[i % len(feeds)]
        start = time.perf_counter_ns()
        session.run(f)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e9


def fidelity(model: Path, data: Path, folder: Path, rounds: int) -> dict:
    artifact = edgeagent.compile(model, "onnxruntime", "fp32", out=folder / "fidelity-artifact")
    arrays = np.load(data)
    feeds = [{k: arrays[k][i:i + 1] for k in ("input_ids", "attention_mask", "token_type_ids")}
             for i in range(SAMPLES)]
    bare, harness = [], []
    with edgeagent.load_session(artifact) as session:
        bare_p50(session, feeds, 20)  # warm-up
        for r in range(rounds):
            bare.append(bare_p50(session, feeds, 200))
            _, document = bench([str(artifact.path), "--eval", str(data), "--batch", "1",
                                 "--out", str(folder / f"fidelity-{r}.json")])
            harness.append(document["benchmarks"][0]["stats"]["p50"])
        bare.append(bare_p50(session, feeds, 200))
    ratio = statistics.median(harness) / statistics.median(bare)
    return {"bare_p50_ms": statistics.median(bare) * 1e3, "harness_p50_ms": statistics.median(harness) * 1e3,
            "ratio": ratio, "within_3pct": abs(ratio - 1) <= 0.03,
            "bare_p50_ms_all": [b * 1e3 for b in bare], "harness_p50_ms_all": [h * 1e3 for h in harness]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_harness.json"))
    parser.add_argument("--fidelity-rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="keep the results files in this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = minilm_sized_encoder(folder)
        data = eval_set(model, folder)
        grid_out = folder / "grid-default.json"
        wall_s, grid = bench([str(model), "--eval", str(data), "--backends", "onnxruntime,openvino",
                              "--precisions", "fp32,int8", "--out", str(grid_out)])
        _, fp16 = bench([str(model), "--eval", str(data), "--backends", "onnxruntime,openvino",
                         "--precisions", "fp16", "--out", str(folder / "grid-fp16.json")])
        fid = fidelity(model, data, folder, args.fidelity_rounds)
    cells = {c["name"]: c for c in [*grid["benchmarks"], *fp16["benchmarks"]]}
    table = markdown_table([grid, fp16])
    summary = {
        "benchmark": "bench_harness", "command": COMMAND, "provenance": provenance(),
        "default_grid_wall_s": wall_s, "default_grid_under_3_min": wall_s < 180,
        "fidelity": fid,
        "p50_ms": {name: c["stats"]["p50"] * 1e3 for name, c in cells.items() if c["status"] == "ok"},
        "int8_over_fp32_p50": {
            backend: cells[f"minilm_sized[{backend}/int8@host]"]["stats"]["p50"]
            / cells[f"minilm_sized[{backend}/fp32@host]"]["stats"]["p50"]
            for backend in ("onnxruntime", "openvino")
            if all(cells.get(f"minilm_sized[{backend}/{p}@host]", {}).get("status") == "ok" for p in ("fp32", "int8"))},
        "statuses": {name: c["status"] for name, c in cells.items()},
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    prov = summary["provenance"]
    print(table)
    print(f"\nCPU: {prov['cpu']} · {prov['usable_cpus']} CPUs · flags "
          f"{', '.join(k for k, v in prov['cpu_flags'].items() if v)}")
    print(f"default grid (fp32+int8 × onnxruntime+openvino, 3 repeats): {wall_s:.0f} s "
          f"({'under' if wall_s < 180 else 'OVER'} the 3-minute target)")
    print(f"fidelity: harness p50 {fid['harness_p50_ms']:.3f} ms vs bare loop {fid['bare_p50_ms']:.3f} ms "
          f"→ ratio {fid['ratio']:.3f} ({'within' if fid['within_3pct'] else 'OUTSIDE'} 3%)")
    for backend, ratio in summary["int8_over_fp32_p50"].items():
        print(f"{backend}: int8 p50 / fp32 p50 = {ratio:.2f} ({'faster' if ratio < 1 else 'slower'} than fp32)")
    print(f"commit {prov['commit']} · {prov['utc']}\nrerun: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
