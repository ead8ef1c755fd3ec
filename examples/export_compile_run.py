"""Export a model, compile it to INT8 and run it: the main job through the Python API.

    python examples/export_compile_run.py [--workdir DIR]

Needs the core and an ONNX Runtime build (`pip install "edgeagent[cpu]"`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import edgeagent
from edgeagent.examples import tiny_classifier
from edgeagent.ir import save_proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgeagent-example-"))

    # An ONNX graph built in code; a PyTorch model goes through edgeagent.export(model, inputs, path).
    ir = save_proto(tiny_classifier(), work / "classifier.onnx")  # checked like every model edgeagent opens
    print(f"model: {ir.path} inputs={[s.to_json() for s in ir.inputs]}")

    rng = np.random.default_rng(0)
    calibration = edgeagent.Dataset([{"x": rng.standard_normal((1, 32)).astype(np.float32)} for _ in range(64)])
    fp32 = edgeagent.compile(ir, "onnxruntime", "fp32", out=work / "fp32")
    int8 = edgeagent.compile(ir, "onnxruntime", "int8", calibration=calibration, out=work / "int8",
                             options={"per_channel": True})
    print(f"int8 recipe: {int8.recipe['name']}, {int8.size_bytes} bytes; batch-invariant: {int8.batch_invariant}")

    x = rng.standard_normal((256, 32)).astype(np.float32)
    with edgeagent.load_session(fp32) as a, edgeagent.load_session(int8) as b:
        reference, quantized = a.run({"x": x})["logits"], b.run({"x": x})["logits"]
    agreement = float((reference.argmax(1) == quantized.argmax(1)).mean())
    print(f"top-1 agreement of INT8 with fp32 on 256 inputs: {agreement:.3f}")


if __name__ == "__main__":
    main()
