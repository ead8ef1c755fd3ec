"""The TensorRT backend on an NVIDIA machine: conformance suite, then the bench beside ONNX Runtime.

One command for whoever has the hardware (nothing here has run on a GPU yet; see the README):

    python benchmarks/gpu/run_tensorrt.py [--out results/gpu]

1. `pytest -m tensorrt tests/backends/test_tensorrt.py`: the backend conformance suite (fp32 parity
   with ONNX's reference evaluator, fp16, INT8 agreement, dynamic batch and sequence, bad input,
   tampered artifacts) plus engine-cache, identity-rebuild, parser-error and device-timing tests.
2. `edgeagent bench` on an all-MiniLM-L6-v2-sized encoder (random weights, built in code) with
   tensorrt and onnxruntime × fp32, fp16, int8: latency (perf_counter around Session.run, and
   CUDA-event `device_latency` with and without host-device copies), memory, size, agreement with
   ONNX Runtime fp32, and each TensorRT artifact's per-layer precisions in its layers.json.
Writes pytest's JUnit XML, the bench JSON and its Markdown report into --out, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import edgeagent

    status = edgeagent.get_backend("tensorrt").available()
    if not status:
        print(f"tensorrt is unavailable here: {status.reason}. {status.install_hint}", file=sys.stderr)
        return 1
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"], check=False)

    code = 0
    if not args.skip_tests:
        code = subprocess.run([sys.executable, "-m", "pytest", "-m", "tensorrt", "-rs", "-q",
                               str(ROOT / "tests/backends/test_tensorrt.py"),
                               f"--junitxml={args.out / 'tensorrt-conformance.xml'}"], cwd=ROOT).returncode

    from benchmarks._models import minilm_sized_encoder
    from benchmarks.bench_harness import eval_set
    from edgeagent.bench import load_results
    from edgeagent.bench.report import markdown_table

    model = minilm_sized_encoder(args.out)
    data = eval_set(model, args.out)
    results = args.out / "bench-tensorrt.json"
    subprocess.run([sys.executable, "-m", "edgeagent.cli.main", "bench", str(model), "--eval", str(data),
                    "--backends", "tensorrt,onnxruntime", "--precisions", "fp32,fp16,int8",
                    "--out", str(results)], check=True)
    document = load_results(results)
    table = markdown_table([document])
    (args.out / "bench-tensorrt.md").write_text(table + "\n")
    print(table)
    for cell in document["benchmarks"]:
        if cell.get("device_latency"):
            print(cell["name"], json.dumps(cell["device_latency"]))
    return code


if __name__ == "__main__":
    sys.exit(main())
