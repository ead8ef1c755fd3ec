"""`edgeagent compile MODEL --backend B --precision P [--calibration FILE.npz] --out DIR`."""

from __future__ import annotations

from ._common import add_format, parse_key_values, print_json


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile an ONNX model into an artifact folder")
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or int8")
    parser.add_argument("--calibration", help=".npz with one array per input, samples on axis 0")
    parser.add_argument("--out", required=True, help="the artifact folder (written atomically)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="backend option, e.g. int8=static, per_channel=true (repeatable)")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..pipeline import compile

    artifact = compile(args.model, args.backend, args.precision, calibration=args.calibration,
                       out=args.out, options=parse_key_values(args.option) or None)
    if args.format == "json":
        print_json({"path": str(artifact.path), **artifact.manifest})
        return 0
    recipe = artifact.recipe.get("name", artifact.precision)
    print(f"compiled {args.model} → {artifact.path} ({artifact.backend}, {artifact.precision}, "
          f"recipe {recipe}, {artifact.size_bytes / 1e6:.2f} MB)")
    return 0
