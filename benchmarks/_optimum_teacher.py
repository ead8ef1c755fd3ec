"""Run in Optimum's own virtual environment (optimum-onnx needs transformers < 4.58): export a BERT
backbone with `optimum-cli export onnx` and quantize it with `ORTQuantizer`, dynamic, per-channel,
the avx512_vnni preset. Prints one JSON line with the files and versions.

    /work/venvs/optimum/bin/python benchmarks/_optimum_teacher.py HF_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path


def main() -> int:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    export = out / "export"
    cli = Path(sys.executable).with_name("optimum-cli")
    subprocess.run([str(cli), "export", "onnx", "--model", str(source), "--task", "feature-extraction",
                    str(export)], check=True, stdout=subprocess.DEVNULL)
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(export)
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    quantizer.quantize(save_dir=out / "int8", quantization_config=config)
    quantized = sorted((out / "int8").glob("*.onnx"))
    print(json.dumps({"fp32": str(export / "model.onnx"), "int8": str(quantized[0]),
                      "versions": {p: version(p) for p in ("optimum", "optimum-onnx", "transformers", "onnxruntime",
                                                           "torch")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
