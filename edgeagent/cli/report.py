"""`edgeagent report RESULTS... [--md FILE] [--csv FILE] [--plot FILE.png] [--format text|json|pytest-benchmark]`."""

from __future__ import annotations

import sys


def register(sub) -> None:
    parser = sub.add_parser("report", help="tables and plots from bench results files")
    parser.add_argument("results", nargs="+", metavar="RESULTS.json")
    parser.add_argument("--md", metavar="FILE", help="write the Markdown table here (default: print it)")
    parser.add_argument("--csv", metavar="FILE", help="write one CSV row per cell")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="latency vs accuracy with the Pareto frontier, and latency distributions")
    parser.add_argument("--format", choices=("text", "json", "pytest-benchmark"), default="text",
                        help="text: the Markdown table; json: the results documents (validated) on stdout; "
                             "pytest-benchmark: pytest-benchmark's JSON, which `pytest-benchmark compare` reads")
    parser.add_argument("--out", metavar="FILE", help="with --format json or pytest-benchmark: write here, not stdout")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import json
    from pathlib import Path

    from ..artifact import atomic_write_text
    from ..bench import load_results
    from ..bench.report import markdown_table, plot, to_pytest_benchmark, write_csv
    from ._common import print_json

    documents = [load_results(path) for path in args.results]
    if args.format != "text":
        if args.format == "json":
            value = documents[0] if len(documents) == 1 else documents
        else:
            value, skipped = to_pytest_benchmark(documents)
            for cell in skipped:  # listed, never dropped silently
                print(f"not converted: {cell['name']} ({cell['status']}: {cell['message'] or 'no timings'})",
                      file=sys.stderr)
        if args.out:
            atomic_write_text(Path(args.out), json.dumps(value, indent=1, default=str) + "\n")
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print_json(value)
        return 0
    table = markdown_table(documents)
    if args.md:
        atomic_write_text(Path(args.md), table + "\n")
        print(f"wrote {args.md}")
    else:
        print(table)
    if args.csv:
        write_csv(documents, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        plot(documents, args.plot)
        print(f"wrote {args.plot}")
    return 0
