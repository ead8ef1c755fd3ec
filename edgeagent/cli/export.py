"""`edgeagent export SPEC --out FILE`: PyTorch or Hugging Face model → parity-checked ONNX."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    parser = sub.add_parser(
        "export", help="export a PyTorch model to ONNX and check parity",
        description="SPEC is `module:function` returning (model, example_inputs) or (model, "
                    "example_inputs, settings) where settings holds export() keywords such as "
                    "dynamic_axes; or a Hugging Face model folder (or hub id) with --task.")
    parser.add_argument("spec")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--task", help="Hugging Face task: text-classification, "
                                       "token-classification or feature-extraction")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--sequence-length", type=int, default=16,
                        help="example sequence length for Hugging Face models (default 16)")
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--rtol", type=float, default=None)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..export import DEFAULT_ATOL, DEFAULT_RTOL, export, export_hf

    tolerances = {"atol": args.atol if args.atol is not None else DEFAULT_ATOL,
                  "rtol": args.rtol if args.rtol is not None else DEFAULT_RTOL}
    if args.task or Path(args.spec).is_dir():
        ir = export_hf(args.spec, args.out, task=args.task or "text-classification",
                       sequence_length=args.sequence_length, opset=args.opset, **tolerances)
    else:
        factory = _resolve(args.spec)
        produced = factory()
        if not (isinstance(produced, tuple) and len(produced) in (2, 3)):
            raise InputError(f"{args.spec} must return (model, example_inputs[, settings]), got "
                             f"{type(produced).__name__}")
        model, example, settings = (*produced, {})[:3]
        allowed = {"input_names", "output_names", "dynamic_axes", "metadata"}
        if not isinstance(settings, dict) or set(settings) - allowed:
            raise InputError(f"{args.spec}'s settings may hold only {sorted(allowed)}")
        ir = export(model, example, args.out, opset=args.opset, **settings, **tolerances)
    print(f"exported {ir.path} (opset {ir.opset}, sha256 {ir.sha256[:12]}): parity with PyTorch holds")
    for spec in ir.inputs:
        print(f"  input  {spec.name}: {spec.dtype}{list(spec.shape)}")
    for spec in ir.outputs:
        print(f"  output {spec.name}: {spec.dtype}{list(spec.shape)}")
    return 0


def _resolve(spec: str):
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"SPEC {spec!r} is neither `module:function` nor an existing model folder")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # `module:function` from the working folder, like `python -m`
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} from SPEC {spec!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{module_name} has no callable {attr!r}")
    return factory
