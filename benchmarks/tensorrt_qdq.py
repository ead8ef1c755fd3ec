"""Issue 6's CPU target: the QDQ graph edgeagent prepares for TensorRT, run in ONNX Runtime.

On the conformance classifier (tests/models.py's MLP, calibrated on 256 blobs, evaluated on 600
held-out ones), the INT8 graph's top-1 must agree with fp32 on at least 99 % of inputs. No GPU
or TensorRT is involved: this checks the graph TensorRT would build from, not an engine.

    python benchmarks/tensorrt_qdq.py [--out results/tensorrt_qdq.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeagent  # noqa: E402
from benchmarks._provenance import provenance  # noqa: E402
from edgeagent.backends.tensorrt.qdq import prepare_qdq  # noqa: E402
from tests import models  # noqa: E402

COMMAND = "python benchmarks/tensorrt_qdq.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/tensorrt_qdq.json"))
    args = parser.parse_args()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = models.mlp_classifier(Path(tmp) / "mlp.onnx")
        x, _ = models.blobs(256, seed=3)
        calibration = edgeagent.Dataset([{"x": x[i:i + 1]} for i in range(len(x))])
        graph, summary = prepare_qdq(edgeagent.load(path), calibration)
        x_eval, labels = models.blobs(600, seed=2)
        fp32 = ort.InferenceSession(str(path)).run(None, {"x": x_eval})[0]
    int8 = ort.InferenceSession(graph.SerializeToString()).run(None, {"x": x_eval})[0]
    result = {"command": COMMAND, "provenance": provenance(), "qdq": summary,
              "top1_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
              "int8_accuracy": float((int8.argmax(1) == labels).mean()),
              "fp32_accuracy": float((fp32.argmax(1) == labels).mean()), "eval_samples": len(labels),
              "verified_on": "ONNX Runtime CPU; no TensorRT engine was built"}
    result["target_99pct_agreement"] = "met" if result["top1_agreement"] >= 0.99 else "NOT met"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))
    print(f"wrote {args.out}\nrerun: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
