"""`edgeagent run MODEL --inputs FILE.npz [--format json]`: MODEL is an artifact folder, or an
uncompiled model (an `.onnx` file or an IR folder, a decoder's included), run as is with ONNX Runtime."""

from __future__ import annotations

import numpy as np

from ._common import add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser("run", help="run an artifact (or an uncompiled ONNX model) on inputs from an .npz file")
    parser.add_argument("artifact", metavar="MODEL", help="artifact folder, .onnx file or IR folder")
    parser.add_argument("--inputs", required=True, help=".npz with one array per input")
    parser.add_argument("--threads", type=int, default=None)
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..data import NpzArrays

    with _open(args.artifact, {"threads": args.threads} if args.threads else None) as session:
        arrays = NpzArrays(args.inputs, input_names=[s.name for s in session.inputs])
        outputs = _run_all(session, arrays)
    if args.format == "json":
        print_json({"outputs": {name: {"shape": list(v.shape), "dtype": str(v.dtype), "data": v.tolist()}
                                for name, v in outputs.items()}})
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)}")
        if np.issubdtype(value.dtype, np.floating) and value.ndim >= 1 and value.shape[-1] > 1:
            print(f"  argmax: {value.argmax(-1).tolist()}")
        with np.printoptions(precision=4, threshold=20, edgeitems=3):
            print(f"  {value}")
    return 0


def _open(path: str, options):
    """An artifact through the backend that built it; anything else as a model ONNX Runtime runs as is
    (after `edgeagent.load`'s safety checks), as `generate` does with a decoder IR folder."""
    from pathlib import Path

    from ..artifact import MANIFEST
    from ..backend import get_backend
    from ..ir import load
    from ..pipeline import load_session

    if (Path(path) / MANIFEST).is_file():
        return load_session(path, options=options)
    backend = get_backend("onnxruntime")
    backend.require_available()
    return backend.open_model(load(path), options=options)


def _run_all(session, arrays) -> dict[str, np.ndarray]:
    """One batched call when the batch axis is dynamic, else one call per sample, concatenated."""
    batch_dynamic = all(s.shape and isinstance(s.shape[0], str) for s in session.inputs)
    if batch_dynamic or arrays.count == 1:
        return session.run(arrays.all())
    parts = [session.run(feeds) for feeds in arrays.batches(1)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
