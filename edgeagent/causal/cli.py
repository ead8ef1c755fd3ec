"""`edgeagent export SOURCE --task text-generation --out DIR` (edgeagent/cli/export.py calls it)."""

from __future__ import annotations


def handle_export(args) -> int:
    """Export SOURCE to a decoder IR folder and print what was written; returns the exit code.

    Raises:
        As `export_causal_lm` (the CLI turns EdgeAgentError into one line and exit 1).
    """
    from ..cli._common import print_json
    from .export import export_causal_lm

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
