"""Build the models and eval data the hardware matrix benches (numpy and onnx only: no torch).

    python -m benchmarks.matrix_models build/

Writes build/mlp.onnx (a fitted classifier, dynamic batch) and build/eval.npz (300 labelled
samples). Small on purpose: it runs on a Pi Zero 2 W in seconds, and it is deterministic, so
baselines stay comparable across commits.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import models  # noqa: E402


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "build")
    folder.mkdir(parents=True, exist_ok=True)
    models.mlp_classifier(folder / "mlp.onnx")
    models.blobs_eval_npz(folder / "eval.npz")
    print(f"wrote {folder / 'mlp.onnx'} and {folder / 'eval.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
