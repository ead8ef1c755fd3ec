"""`edgeagent compile MODEL --backend B --precision P [--calibration FILE.npz] --out DIR`."""

from __future__ import annotations

from ._common import add_format, parse_key_values, print_json


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile an ONNX model into an artifact folder")
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("--backend", default=None,
                        help="default onnxruntime; with --precision auto, the target's backends")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, fp16, int8, or auto: measure the target's INT8 recipes and fp32 here, "
                             "keep the fastest within the accuracy budget")
    parser.add_argument("--target", default=None, help="target name or .toml path (default host)")
    parser.add_argument("--eval", metavar="FILE.npz",
                        help="with --precision auto: labelled data for the accuracy check")
    parser.add_argument("--workload", help="with --precision int8: compare INT8 with fp32 on this workload "
                                           "and keep the most sensitive nodes in fp32 if it drops too far")
    parser.add_argument("--max-drop", type=float, default=0.01,
                        help="allowed accuracy drop of INT8 against fp32, as a fraction (default 0.01)")
    parser.add_argument("--calibration", help=".npz with one array per input, samples on axis 0")
    parser.add_argument("--out", required=True, help="the artifact folder (written atomically)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="backend option, e.g. int8=static, per_channel=true (repeatable)")
    parser.add_argument("--device", help="cpu, gpu, gpu.1, npu, …: the device the artifact is for, mapped to the "
                                         "backend's own (an OpenVINO device, an ONNX Runtime execution provider, "
                                         "a TensorRT GPU); refused with the devices present if it is absent")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..pipeline import compile

    options = _with_device(args.backend or "onnxruntime", parse_key_values(args.option), args.device)
    if args.precision == "auto":
        from ..recipes import choose

        artifact = choose(args.model, out=args.out, calibration=args.calibration, eval=args.eval,
                          target=args.target, backends=[args.backend] if args.backend else None,
                          device=options.get("device") if args.device else None)
        if args.format != "json":
            _print_selection(artifact.manifest["selection"])
    elif args.workload and args.precision == "int8":
        from ..recipes import int8_with_fallback
        from ..workloads import get_workload

        calibration = args.calibration
        workload = get_workload(args.workload)
        if calibration is None:
            from ..ir import load

            calibration = workload.calibration(load(args.model).inputs)
        artifact = int8_with_fallback(args.model, workload=workload, out=args.out,
                                      backend=args.backend or "onnxruntime", calibration=calibration,
                                      options=options, max_drop=args.max_drop)
        check = artifact.manifest["int8_check"]
        kept = (check["fallback"] or {}).get("nodes_kept_fp32")
        print(f"{check['metric']}: fp32 {check['fp32'][check['metric']]:.4f}, int8 "
              f"{check['int8'][check['metric']]:.4f} (drop {check['drop'] * 100:.2f} points)"
              + (f"; kept in fp32: {kept}" if kept else "; within budget, no fallback needed"))
    else:
        target = None
        if args.target:
            from ..targets import get_target

            target = get_target(args.target)
        artifact = compile(args.model, args.backend or "onnxruntime", args.precision,
                           calibration=args.calibration, target=target, out=args.out, options=options or None)
    if args.format == "json":
        print_json({"path": str(artifact.path), **artifact.manifest})
        return 0
    recipe = artifact.recipe.get("name", artifact.precision)
    print(f"compiled {args.model} → {artifact.path} ({artifact.backend}, {artifact.precision}, "
          f"recipe {recipe}, {artifact.size_bytes / 1e6:.2f} MB)")
    return 0


def _with_device(backend_name: str, options: dict, device: str | None) -> dict:
    """`--option`s plus the compile options that put the backend on `--device` (checked here)."""
    if not device:
        return options
    from ..backend import get_backend

    backend = get_backend(backend_name)
    compile_values, _ = backend.split_options(backend.device_options(device))
    return {**compile_values, **options}


def _print_selection(selection) -> None:
    from ._common import table

    def num(value):
        return "–" if value is None else f"{value:.4g}"

    print(table([[r["cell"], r["status"], num(r.get("p50_ms")), num(r.get("quality")), num(r.get("drop")),
                  "yes" if r.get("meets_budget") else "no"] for r in selection["candidates"]],
                ["candidate", "status", "p50 ms", "quality", "drop", "within budget"]))
    for note in selection["notes"]:
        print(f"note: {note}")
    print(f"chosen: {selection['chosen']} (max drop {selection['max_drop']}; accuracy from "
          f"{selection['accuracy_from']})")
