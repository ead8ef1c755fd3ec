"""`edgeagent report RESULTS... [--md FILE] [--csv FILE] [--plot FILE.png]`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("report", help="tables and plots from bench results files")
    parser.add_argument("results", nargs="+", metavar="RESULTS.json")
    parser.add_argument("--md", metavar="FILE", help="write the Markdown table here (default: print it)")
    parser.add_argument("--csv", metavar="FILE", help="write one CSV row per cell")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="latency vs accuracy with the Pareto frontier, and latency distributions")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from pathlib import Path

    from ..artifact import atomic_write_text
    from ..bench import load_results
    from ..bench.report import markdown_table, plot, write_csv

    documents = [load_results(path) for path in args.results]
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
