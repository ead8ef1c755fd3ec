"""`edgeagent export SOURCE --task text-generation --out DIR`, ready for the CLI to call.

The export command's parser lives in edgeagent/cli/export.py (being refactored); it reaches this
with one line at the top of its handler:

    if args.task == "text-generation": return causal_cli.handle_export(args)

`args` needs `spec` (the SOURCE), `out`, `opset`, and optionally `max_length`.
"""

from __future__ import annotations


def handle_export(args) -> int:
    """Export SOURCE to a decoder IR folder and print what was written; returns the exit code.

    Raises:
        As `export_causal_lm` (the CLI turns EdgeAgentError into one line and exit 1).
    """
    from .export import export_causal_lm

    ir = export_causal_lm(args.spec, args.out, max_length=getattr(args, "max_length", None), opset=args.opset)
    meta = ir.metadata
    parity = meta["parity"]
    print(f"exported {meta['architecture']} decoder to {ir.path} (opset {ir.model.opset}, {meta['num_layers']} "
          f"layers, {meta['num_heads']}/{meta['num_kv_heads']} heads, vocabulary {meta['vocab_size']}, "
          f"max length {meta['max_length']})")
    print(f"  parity with transformers: prefill max abs diff {parity.get('prefill_max_abs_diff', 0):.2g}, "
          f"{parity['decode_steps']} decode steps max abs diff {parity.get('decode_max_abs_diff', 0):.2g}, "
          f"greedy continuations identical {parity['greedy_identical']}")
    for name in sorted(p.name for p in ir.path.iterdir()):
        print(f"  {name}")
    return 0
