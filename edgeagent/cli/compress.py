"""`edgeagent compress MODEL --prune heads=0.5,ffn=0.5 --low-rank embeddings=96 --workload W --out DIR`:
prune, factorise and recover a saved model, keep it only if it measures faster (or smaller)."""

from __future__ import annotations

from ._common import BF16, add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser(
        "compress", help="prune heads, neurons and layers, factorise, recover, and keep only if faster (train extra)",
        description="MODEL is a folder written by `edgeagent finetune`, `distill` or `compress`. The result is "
                    "such a folder too (OUT/config.json, weights, tokenizer, OUT/<name of OUT>.onnx), which "
                    "`edgeagent compile` and `bench` take like any student; its ONNX metadata records the recipe. "
                    "MODEL may also be a Llama/Qwen2 Hugging Face folder: it is pruned (heads in whole KV groups, "
                    "FFN neurons, layers; Taylor importance on the workload's tool-call chats) and recovered on "
                    "them, and OUT is a Hugging Face folder for `export --task text-generation` (with "
                    "--no-measure: time the exported decoder with `bench`).")
    parser.add_argument("model", help="the model folder to compress")
    parser.add_argument("--prune", default="",
                        help="shares removed: heads=R,ffn=R,layers=R (R in [0, 1)); layers=1+3 removes those layers "
                        "(layers=2+ one layer); positions=N keeps N position rows")
    parser.add_argument("--low-rank", default="",
                        help="kind or module name = rank (integer) or kept spectral energy (0 < E < 1): "
                        "embeddings=96,ffn=128,attention=0.9")
    parser.add_argument("--importance", choices=("taylor", "magnitude"), default="taylor",
                        help="ranking: first-order Taylor on the training data (default) or weight magnitude")
    parser.add_argument("--scope", choices=("layer", "global"), default="layer",
                        help="each layer loses the same share (default) or heads and neurons are ranked across layers")
    parser.add_argument("--round-to", type=int, default=1, help="FFN widths kept as a multiple of N")
    parser.add_argument("--workload", required=True, help="a trainable workload: data for importance and recovery")
    parser.add_argument("--recover-epochs", type=int, default=2, help="distillation epochs after compressing (0: none)")
    parser.add_argument("--recover-after", choices=("end", "each"), default="end",
                        help="recover once at the end (default) or after pruning and again after factorising")
    parser.add_argument("--teacher", default=None, help="model folder recovery distils from (default: MODEL itself)")
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="add N transfer sentences per intent to the recovery data (as `distill --augment`)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--bf16", choices=tuple(BF16), default="auto",
                        help="bf16 autocast for recovery's forward pass, weights kept float32 (auto, the default: "
                        "where the CPU has AVX512-BF16 or AMX)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--goal", choices=("speed", "size"), default="speed",
                        help="what the compressed model must beat its input at (default speed: p50 end to end)")
    parser.add_argument("--no-measure", action="store_true", help="skip the gate (keep whatever comes out)")
    parser.add_argument("--keep-input", action="store_true",
                        help="when the recipe does not measure better, write the input model to OUT instead of failing")
    parser.add_argument("--threads", type=int, default=1, help="inference threads while timing (default 1)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (default 9)")
    parser.add_argument("--min-change", type=float, default=0.0, metavar="PCT",
                        help="how much faster (or smaller) it must be, in percent, beyond the noise (default 0)")
    parser.add_argument("--no-export", action="store_true", help="skip writing OUT/<name of OUT>.onnx")
    parser.add_argument("--out", required=True, help="the compressed model folder")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from pathlib import Path

    from ..compress import MeasureSpec, RecoverSpec, compress, parse_low_rank, parse_prune
    from ..distill import load_joint, save_joint
    from ..distill.workflow import export_model, saved_labels, score
    from ..errors import InputError
    from .distill import _workload

    prune = parse_prune(args.prune, importance=args.importance, scope=args.scope,
                        round_to=args.round_to) if args.prune else None
    low_rank = parse_low_rank(args.low_rank) if args.low_rank else None
    if args.augment < 0:
        raise InputError(f"--augment must be 0 or more, got {args.augment}", field="--augment")
    if _is_decoder_folder(Path(args.model)):
        return _compress_decoder(args, prune)
    model = load_joint(args.model)
    tokenizer_path = Path(args.model) / "tokenizer.json"
    workload = _workload(args.workload, tokenizer_path if tokenizer_path.is_file() else None)
    teacher = load_joint(args.teacher) if args.teacher else None
    train = workload.training_examples("train", seed=args.seed)[:args.limit]
    if args.augment:
        if not callable(getattr(workload, "transfer_examples", None)):
            raise InputError(f"workload {workload.name!r} has no transfer set: --augment needs one", field="--augment")
        train = train + workload.transfer_examples(teacher or model, args.augment, seed=args.seed)
    recover = RecoverSpec(epochs=args.recover_epochs, lr=args.lr, batch_size=args.batch_size, after=args.recover_after,
                          seed=args.seed, bf16=BF16[args.bf16])
    measure = None if args.no_measure else MeasureSpec(
        goal=args.goal, threads=args.threads, rounds=args.rounds, min_change_pct=args.min_change,
        on_reject="keep-input" if args.keep_input else "error")
    result = compress(model, prune=prune, low_rank=low_rank, data=train, recover=recover, task=workload.task,
                      eval_data=workload.training_examples("dev", seed=args.seed), teacher=teacher, measure=measure,
                      workload=workload)
    rejected = getattr(result, "compression_rejected", None) if result is model else None
    scores = score(workload.task, result, workload.training_examples("test", seed=args.seed))
    extra = {"kind": "compressed" if rejected is None else model.saved_config.get("kind", "student"),
             "workload": workload.name, "test": scores, "source": str(args.model)}
    if rejected is not None:
        extra["compression_rejected"] = rejected
    folder = save_joint(result, args.out, labels=saved_labels(workload.task), tokenizer=workload.tokenizer_path,
                        extra=extra)
    onnx_path = Path(folder) / f"{Path(folder).name}.onnx"
    if not args.no_export:
        export_model(workload.task, result, onnx_path)
    record = getattr(result, "compression", None) or {}
    if args.format == "json":
        print_json({"out": str(folder), "onnx": None if args.no_export else str(onnx_path), "test": scores,
                    "kept": rejected is None, "compression": record if rejected is None else None,
                    "measured": rejected if rejected is not None else record.get("measured")})
        return 0
    if rejected is not None:
        print(f"not kept, input written unchanged to {folder}: {rejected['verdict']}")
    else:
        structure = record.get("structure", {})
        widths = ", ".join(f"{s['heads']}h/{s['ffn']}" for s in structure.get("layers", []))
        ranks = ", ".join(f"{name.replace('encoder.encoder.layer.', 'layer ').replace('encoder.embeddings.', '')}"
                          f"={rank}" for name, rank in structure.get("low_rank", {}).items())
        print(f"compressed → {folder}: {len(structure.get('layers', []))} layers (heads/FFN {widths})"
              + (f"; low rank {ranks}" if ranks else ""))
        if record.get("measured"):
            print(f"  {record['measured']['verdict']}")
    print("  test " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
          + ("" if args.no_export else f"; ONNX at {onnx_path}"))
    return 0



def _is_decoder_folder(folder) -> bool:
    """A Hugging Face causal LM folder of a family edgeagent exports (not a `save_joint` folder)."""
    import json

    from ..causal.sources import SUPPORTED_ARCHITECTURES

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # load_joint names what is missing or malformed
    return (isinstance(config, dict) and config.get("format") is None
            and config.get("model_type") in SUPPORTED_ARCHITECTURES)


def _compress_decoder(args, prune) -> int:
    """Prune (and recover) a Llama/Qwen2 folder; write a Hugging Face folder that
    `export --task text-generation` takes, the recipe in its config.json."""
    from pathlib import Path

    import numpy as np

    from ..causal.finetune import _resolve_task, encode_calls, tool_call_data
    from ..causal.sources import load_causal_lm, write_hf_folder
    from ..compress import RecoverSpec, compress
    from ..errors import InputError

    if args.low_rank:
        raise InputError("--low-rank factorises encoders; prune a decoder (heads, ffn, layers)", field="--low-rank")
    if not args.no_measure:
        raise InputError("the speed gate times encoders end to end; for a decoder pass --no-measure and time the "
                         "exported IR with `edgeagent bench` (benchmarks/decoder_pruning.py does both sides)",
                         field="--no-measure")
    if prune is None:
        raise InputError("give --prune heads=R,ffn=R,layers=R for a decoder", field="--prune")
    loaded = load_causal_lm(args.model)
    tokenizer = loaded.tokenizer
    rows = tool_call_data(args.workload, "train", max_examples=args.limit, seed=args.seed)
    max_length = int(getattr(loaded.model.config, "max_position_embeddings", 2048) or 2048)
    examples, _ = encode_calls(tokenizer, rows, _resolve_task(None, args.workload).messages,
                               max_length=min(max_length, 1024))
    # The chats the generation loop renders, with their calls: next-token loss for Taylor
    # importance and the distillation data for recovery.
    data = [{"input_ids": np.asarray(e.input_ids, np.int64), "attention_mask": np.ones(len(e.input_ids), np.int64)}
            for e in examples]
    recover = (RecoverSpec(epochs=args.recover_epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                           bf16=BF16[args.bf16]) if args.recover_epochs else None)
    result = compress(loaded.model, prune=prune, data=data, recover=recover,
                      progress=args.format != "json")
    folder = write_hf_folder(result, tokenizer, Path(args.out))
    record = result.compression
    step = next((s for s in record["steps"] if s.get("step") == "prune"), {})
    if args.format == "json":
        print_json({"out": str(folder), "compression": record})
    else:
        print(f"compressed → {folder}: {len(step.get('layers_kept', []))} layers, FFN {step.get('ffn')}, "
              f"{step.get('kv_groups')} KV groups; export it with `edgeagent export {folder} --task text-generation`")
    return 0
