"""`edgeagent bench MODEL_OR_ARTIFACT... [--workload NAME | --eval FILE.npz] --out FILE.json`."""

from __future__ import annotations

import sys

from ._common import add_format, parse_key_values, print_json


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> tuple[int, ...]:
    import argparse

    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None


def register(sub) -> None:
    parser = sub.add_parser(
        "bench", help="benchmark models or artifacts across backends and precisions",
        description="Each cell (model × backend × precision) compiles and runs in its own processes; "
                    "a crash, hang or out-of-memory is recorded as that cell's status.")
    parser.add_argument("models", nargs="+", metavar="MODEL_OR_ARTIFACT",
                        help=".onnx files or decoder IR folders (compiled per cell), or artifact folders "
                             "(run as built)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--workload", help="a registered workload (data, timing inputs, metrics)")
    data.add_argument("--eval", metavar="FILE.npz", help="one array per input name plus `labels`")
    parser.add_argument("--calibration", metavar="FILE.npz",
                        help="INT8 calibration inputs (default: the eval data's or workload's inputs)")
    parser.add_argument("--backends", type=_csv, help="comma-separated (default: the target's)")
    parser.add_argument("--precisions", type=_csv, help="comma-separated, e.g. fp32,int8 (default: the "
                                                        "target's presets, else fp32,int8)")
    parser.add_argument("--target", default="host", help="target name or .toml path (default: host)")
    parser.add_argument("--repeats", type=int, help="measurement processes per cell (default 3)")
    parser.add_argument("--min-calls", type=int, help="timed calls per run, at least (default 100)")
    parser.add_argument("--min-time", type=float, help="timed seconds per run, at least (default 1)")
    parser.add_argument("--warmup", type=int, help="warm-up calls (default 10)")
    parser.add_argument("--batch", type=int, help="throughput batch size where the batch axis is dynamic "
                                                  "(default 8; 1 skips)")
    parser.add_argument("--prompt-tokens", type=_ints, metavar="N,N,…",
                        help="decoders: prompt lengths in tokens (default 32,128,512)")
    parser.add_argument("--new-tokens", type=_ints, metavar="N,N,…",
                        help="decoders: tokens generated per run (default 32,128)")
    parser.add_argument("--generation-runs", type=int, help="decoders: timed runs per shape (default 3)")
    parser.add_argument("--agreement-prompts", type=int,
                        help="decoders: prompts for greedy agreement with float32 (default 200)")
    parser.add_argument("--agreement-tokens", type=int,
                        help="decoders: greedy tokens per agreement prompt (default 32)")
    parser.add_argument("--max-cv", type=float, help="flag cells `unstable` above this variation (default 0.10)")
    parser.add_argument("--release", action="store_true",
                        help="release-grade protocol: ≥1024 calls and ≥60 s per run, 5 repeats")
    parser.add_argument("--option", action="append", metavar="BACKEND.KEY=VALUE",
                        help="a backend option, e.g. onnxruntime.int8=static (repeatable)")
    parser.add_argument("--timeout", action="append", metavar="STAGE=SECONDS",
                        help="per-stage timeout: compile, load, first_inference, run, accuracy")
    parser.add_argument("--dim", action="append", metavar="NAME=SIZE",
                        help="size of a symbolic dim when timing without data, e.g. sequence=32")
    parser.add_argument("--device", help="cpu, gpu, gpu.1, npu, …: run every cell there (each backend's own "
                                         "device); cells whose backend cannot are skipped with the reason")
    parser.add_argument("--reference", metavar="MODEL.onnx",
                        help="fp32 model (a decoder's IR folder) that artifacts' outputs are compared with")
    parser.add_argument("--gate", action="store_true",
                        help="exit 1 when a cell fails (error, crash, timeout, out of memory) or breaks a target budget")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its journal")
    parser.add_argument("--out", required=True, metavar="FILE.json")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import dataclasses

    from ..bench import BenchConfig, BenchProtocol, gate, run_bench
    from ..errors import InputError
    from ..bench.report import markdown_table

    protocol = BenchProtocol.release() if args.release else BenchProtocol()
    overrides = {"repeats": args.repeats, "min_calls": args.min_calls, "min_time_s": args.min_time,
                 "warmup_calls": args.warmup, "batch": args.batch, "max_cv": args.max_cv,
                 "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                 "generation_runs": args.generation_runs, "agreement_prompts": args.agreement_prompts,
                 "agreement_tokens": args.agreement_tokens}
    protocol = dataclasses.replace(protocol, **{k: v for k, v in overrides.items() if v is not None})
    options: dict[str, dict[str, str]] = {}
    for key, value in parse_key_values(args.option).items():
        backend, dot, option = key.partition(".")
        if not dot or not option:
            raise InputError(f"--option {key}={value} must be BACKEND.KEY=VALUE", field="--option")
        options.setdefault(backend, {})[option] = value
    timeouts = {}
    for stage, value in parse_key_values(args.timeout, "--timeout").items():
        try:
            timeouts[stage] = float(value)
        except ValueError:
            raise InputError(f"--timeout {stage}={value}: seconds must be a number", field="--timeout") from None
    dims = {}
    for name, value in parse_key_values(args.dim, "--dim").items():
        if not value.isdigit() or int(value) < 1:
            raise InputError(f"--dim {name}={value}: the size must be a positive integer", field="--dim")
        dims[name] = int(value)
    config = BenchConfig(models=args.models, out=args.out, workload=args.workload, eval=args.eval,
                         calibration=args.calibration, backends=args.backends, precisions=args.precisions,
                         target=args.target, protocol=protocol, options=options, timeouts=timeouts,
                         reference=args.reference, dims=dims, device=args.device, resume=args.resume,
                         argv=sys.argv[1:])
    document = run_bench(config)
    if args.format == "json":
        print_json(document)
    else:
        print(markdown_table(document))
        print(f"\nwrote {args.out}")
    if args.gate:
        failures, notes = gate(document)
        for note in notes:
            print(f"gate: {note}", file=sys.stderr)
        if failures:
            print("gate FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
            return 1
        print("gate passed: every cell ran" + (" within the target's budgets" if not any(
            "sets no budgets" in n for n in notes) else " (the target sets no budgets)"),
            file=sys.stderr if args.format == "json" else sys.stdout)
    return 0
