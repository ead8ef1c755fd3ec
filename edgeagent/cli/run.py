"""`edgeagent run ARTIFACT --inputs FILE.npz [--format json]`."""

from __future__ import annotations

import numpy as np

from ._common import add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser("run", help="run an artifact on inputs from an .npz file")
    parser.add_argument("artifact")
    parser.add_argument("--inputs", required=True, help=".npz with one array per input")
    parser.add_argument("--threads", type=int, default=None)
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..data import NpzArrays
    from ..pipeline import load_session

    with load_session(args.artifact, options={"threads": args.threads} if args.threads else None) as session:
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


def _run_all(session, arrays) -> dict[str, np.ndarray]:
    """One batched call when the batch axis is dynamic, else one call per sample, concatenated."""
    batch_dynamic = all(s.shape and isinstance(s.shape[0], str) for s in session.inputs)
    if batch_dynamic or arrays.count == 1:
        return session.run(arrays.all())
    parts = [session.run(feeds) for feeds in arrays.batches(1)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
