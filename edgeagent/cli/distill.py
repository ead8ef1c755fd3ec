"""`edgeagent distill --workload NAME --teacher DIR --student layers=2,hidden=128 --out DIR`
and `edgeagent finetune --workload NAME [--base ID_OR_DIR] --out DIR` (how a teacher is made)."""

from __future__ import annotations

from ._common import parse_key_values

STUDENT_KEYS = {"layers": int, "hidden": int, "heads": int, "ffn": int, "vocab": str, "common_tokens": int,
                "architecture": str}


def register(sub) -> None:
    distill = sub.add_parser("distill", help="distil a small student from a fine-tuned teacher (train extra)")
    distill.add_argument("--workload", required=True, help="a trainable workload: its data, task and metric")
    distill.add_argument("--teacher", required=True, help="teacher folder written by `edgeagent finetune`")
    distill.add_argument("--student", default="layers=1,hidden=192",
                         help="student shape: layers=N,hidden=N[,heads=N,ffn=N,vocab=task|full,common_tokens=N,"
                         "architecture=compact|bert]")
    distill.add_argument("--temperature", type=float, default=2.0)
    distill.add_argument("--alpha", type=float, default=0.5)
    distill.add_argument("--hidden-loss", choices=("mse",), default=None)
    distill.add_argument("--patience", type=int, default=3, help="epochs without improvement before stopping")
    distill.add_argument("--augment", type=int, default=0, metavar="N",
                         help="add N sentences per intent whose names have words swapped for their neighbours "
                         "in the teacher's embeddings (never a dev or test name); 0: none")
    _common(distill, epochs=10, lr=2e-3)
    distill.set_defaults(handler=handle_distill)
    finetune = sub.add_parser("finetune", help="fine-tune a teacher on a workload (train extra)")
    finetune.add_argument("--workload", required=True, help="a trainable workload: its data, task and metric")
    finetune.add_argument("--base", default=None,
                          help="Hugging Face id or folder (default: all-MiniLM-L6-v2, offline)")
    _common(finetune, epochs=2, lr=8e-5)
    finetune.set_defaults(handler=handle_finetune)


def _common(parser, *, epochs: int, lr: float) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--group-by-length", action="store_true",
                        help="batch sentences of similar length together: less padding, faster epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training sentences")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT/checkpoints")
    parser.add_argument("--no-export", action="store_true", help="skip writing OUT/<name of OUT>.onnx")
    parser.add_argument("--out", required=True, help="the model folder")


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
                               "history": getattr(model, "training_history", []), **extra})
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

    workload = _workload(args.workload)
    model = train_teacher(workload, base=args.base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, limit=args.limit, group_by_length=args.group_by_length,
                          checkpoint_dir=Path(args.out).with_name(Path(args.out).name + ".checkpoints"),
                          resume=args.resume)
    return _finish(model, args, workload, workload.tokenizer_path, "teacher", {"base": args.base})


def handle_distill(args) -> int:
    from pathlib import Path

    from ..distill import distill, load_joint, student_from_teacher
    from ..errors import InputError

    shape = _student_shape(args.student)
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
                      checkpoint_dir=Path(args.out).with_name(Path(args.out).name + ".checkpoints"), resume=args.resume)
    return _finish(student, args, workload, workload.tokenizer_path, "student",
                   {"teacher": str(args.teacher), "init": getattr(student, "init_report", {}),
                    "augment": args.augment})
