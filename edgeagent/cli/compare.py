"""`edgeagent compare BASE NEW [--max-latency-regression PCT] [--max-accuracy-drop POINTS]`."""

from __future__ import annotations

from ._common import add_format, print_json, table


def register(sub) -> None:
    parser = sub.add_parser("compare", help="per-cell deltas between two results files; exit 1 on a regression")
    parser.add_argument("base", metavar="BASE.json")
    parser.add_argument("new", metavar="NEW.json")
    parser.add_argument("--max-latency-regression", type=float, default=10.0, metavar="PCT",
                        help="p50 slowdown allowed, in percent (default 10): a cell fails when the 95%% bootstrap "
                             "confidence interval of its p50 change lies entirely above it")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                        help="accuracy drop allowed, in percentage points (default 1)")
    parser.add_argument("--strict-hardware", action="store_true",
                        help="gate latency even when the two files come from different CPUs")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..bench import load_results
    from ..bench.compare import compare
    from ..errors import InputError

    if args.max_latency_regression < 0 or args.max_accuracy_drop < 0:
        raise InputError("--max-latency-regression and --max-accuracy-drop must be ≥ 0", field="threshold")
    deltas = compare(load_results(args.base), load_results(args.new),
                     max_latency_regression=args.max_latency_regression,
                     max_accuracy_drop=args.max_accuracy_drop, strict_hardware=args.strict_hardware)
    regressions = [d for d in deltas if d.verdict == "regression"]
    if args.format == "json":
        print_json({"regressions": len(regressions), "cells": [d.to_json() for d in deltas]})
    else:
        def num(value, spec):
            return "–" if value is None else format(value, spec)

        def interval(d):
            return "–" if d.latency_ci_pct is None else f"[{d.latency_ci_pct[0]:+.1f}, {d.latency_ci_pct[1]:+.1f}]"

        print(table([[d.name, d.verdict, num(d.base_p50_ms, ".4g"), num(d.new_p50_ms, ".4g"),
                      num(d.latency_pct, "+.1f"), interval(d), num(d.accuracy_points, "+.2f"),
                      "; ".join(d.reasons)] for d in deltas],
                    ["cell", "verdict", "base p50 ms", "new p50 ms", "Δp50 %", "95% CI of Δp50 %", "Δacc pts", "why"]))
        print("\nLatency regresses only when the whole bootstrap confidence interval of the p50 change lies above "
              f"--max-latency-regression ({args.max_latency_regression:g} %).")
        print(f"\n{len(regressions)} regression(s) in {len(deltas)} cell(s)")
    return 1 if regressions else 0
