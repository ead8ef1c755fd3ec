"""`edgeagent export SPEC --out FILE`: PyTorch or Hugging Face model → parity-checked ONNX;
`edgeagent export SOURCE --task text-generation --out DIR`: a causal LM → decoder IR folder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..errors import InputError
from ._common import add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser(
        "export", help="export a PyTorch model to ONNX and check parity",
        description="SPEC is `module:function` returning (model, example_inputs) or (model, "
                    "example_inputs, settings) where settings holds export() keywords such as "
                    "dynamic_axes, or an onnx.ModelProto built in code; or a Hugging Face model folder "
                    "(or hub id) with --task. Shipped examples: edgeagent.examples:tiny_encoder (PyTorch), "
                    "edgeagent.examples:tiny_classifier (ONNX, no torch needed). With --task "
                    "text-generation, SOURCE is a causal LM (Hugging Face folder or id, a .gguf file, or "
                    "`module:function`) and --out a folder: the decoder IR with its KV cache inputs, "
                    "tokenizer and chat template, proved against transformers.")
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--out", required=True, help="the .onnx file to write (a folder for text-generation)")
    parser.add_argument("--task", help="Hugging Face task: text-classification, token-classification, "
                                       "feature-extraction or text-generation (a decoder IR folder)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="text-generation: the longest prompt + output the IR admits (default the "
                             "model's max_position_embeddings)")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--sequence-length", type=int, default=16,
                        help="example sequence length for Hugging Face models (default 16)")
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--rtol", type=float, default=None)
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..export import DEFAULT_ATOL, DEFAULT_RTOL, export, export_hf

    if args.task == "text-generation" or (args.task is None and args.spec.lower().endswith(".gguf")):
        return _export_decoder(args)
    if args.max_length is not None:
        raise InputError("--max-length applies to --task text-generation only", field="--max-length")
    tolerances = {"atol": args.atol if args.atol is not None else DEFAULT_ATOL,
                  "rtol": args.rtol if args.rtol is not None else DEFAULT_RTOL}
    checked = "parity with PyTorch holds"
    if args.task or Path(args.spec).is_dir():
        ir = export_hf(args.spec, args.out, task=args.task or "text-classification",
                       sequence_length=args.sequence_length, opset=args.opset, **tolerances)
    else:
        produced = _resolve(args.spec)()
        if _is_model_proto(produced):
            from ..ir import save_proto

            # A graph built in code is its own source: nothing to compare with, but it is written
            # through the same safe path and full checker as every other model.
            ir = save_proto(produced, args.out)
            checked = "an ONNX graph built in code, checked with onnx.checker (full check)"
        else:
            if not (isinstance(produced, tuple) and len(produced) in (2, 3)):
                raise InputError(f"{args.spec} must return (model, example_inputs[, settings]) or an "
                                 f"onnx.ModelProto, got {type(produced).__name__}")
            model, example, settings = (*produced, {})[:3]
            allowed = {"input_names", "output_names", "dynamic_axes", "metadata"}
            if not isinstance(settings, dict) or set(settings) - allowed:
                raise InputError(f"{args.spec}'s settings may hold only {sorted(allowed)}")
            ir = export(model, example, args.out, opset=args.opset, **settings, **tolerances)
    if args.format == "json":
        print_json({"path": str(ir.path), "opset": ir.opset, "sha256": ir.sha256, "check": checked,
                    **ir.signature(), "metadata": dict(ir.metadata),
                    "external_files": list(ir.external_files)})
        return 0
    print(f"exported {ir.path} (opset {ir.opset}, sha256 {ir.sha256[:12]}): {checked}")
    for spec in ir.inputs:
        print(f"  input  {spec.name}: {spec.dtype}{list(spec.shape)}")
    for spec in ir.outputs:
        print(f"  output {spec.name}: {spec.dtype}{list(spec.shape)}")
    return 0


def _export_decoder(args) -> int:
    """Export SOURCE to a decoder IR folder and print what was written; returns the exit code.

    Raises:
        As `export_causal_lm` (the CLI turns EdgeAgentError into one line and exit 1).
    """
    from ..causal.export import export_causal_lm

    tolerances = {k: v for k in ("atol", "rtol") if (v := getattr(args, k, None)) is not None}
    ir = export_causal_lm(args.spec, args.out, max_length=getattr(args, "max_length", None), opset=args.opset,
                          **tolerances)
    meta = ir.metadata
    parity = meta["parity"]
    if getattr(args, "format", "text") == "json":
        print_json({"path": str(ir.path), "task": "text-generation", "opset": ir.model.opset,
                    "sha256": ir.model.sha256, "metadata": dict(meta), **ir.model.signature(),
                    "files": sorted(p.name for p in ir.path.iterdir())})
        return 0
    print(f"exported {meta['architecture']} decoder to {ir.path} (opset {ir.model.opset}, {meta['num_layers']} "
          f"layers, {meta['num_heads']}/{meta['num_kv_heads']} heads, vocabulary {meta['vocab_size']}, "
          f"max length {meta['max_length']})")
    print(f"  parity with transformers: prefill max abs diff {parity.get('prefill_max_abs_diff', 0):.2g}, "
          f"{parity['decode_steps']} decode steps max abs diff {parity.get('decode_max_abs_diff', 0):.2g}, "
          f"greedy continuations identical {parity['greedy_identical']}")
    for name in sorted(p.name for p in ir.path.iterdir()):
        print(f"  {name}")
    return 0


def _is_model_proto(value) -> bool:
    try:
        import onnx
    except ImportError:
        return False
    return isinstance(value, onnx.ModelProto)


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
