"""`edgeagent matrix [--targets a,b] --format github` and `edgeagent matrix run|gate`.

The plan is what `.github/workflows/hardware-matrix.yml` fans out over: one job per target on
runners carrying the target's labels. `run` does the same grid on this machine for every
target it can run (natively or emulated); `gate` compares each target's results with its
committed baseline in `benchmarks/baselines/<target>.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import print_json, table


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub) -> None:
    parser = sub.add_parser("matrix", help="the CI hardware matrix: plan, run here, gate against baselines")
    parser.add_argument("--targets", type=_csv, help="comma-separated (default: every target)")
    parser.add_argument("--format", choices=("text", "json", "github"), default="text",
                        help="github: one-line JSON for `matrix: ${{ fromJSON(...) }}`")
    parser.add_argument("--runners", choices=("all", "hosted", "self-hosted"), default="all",
                        help="only targets on hosted runners, or only those on self-hosted ones (default all)")
    parser.add_argument("--online-runners", type=Path, metavar="FILE.json",
                        help="a JSON list of the label lists of the runners online now; a self-hosted "
                             "target no online runner carries is left out with a notice")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    run = actions.add_parser("run", help="bench every target this machine can run and merge the reports")
    run.add_argument("models", nargs="+", metavar="MODEL_OR_ARTIFACT")
    data = run.add_mutually_exclusive_group()
    data.add_argument("--workload")
    data.add_argument("--eval", metavar="FILE.npz")
    run.add_argument("--targets", type=_csv, dest="run_targets", help="comma-separated (default: every target)")
    run.add_argument("--repeats", type=int, default=None)
    run.add_argument("--out-dir", required=True, type=Path, help="one <target>.json per target, report.md")
    run.add_argument("--baselines", type=Path, default=Path("benchmarks/baselines"))
    gate = actions.add_parser("gate", help="compare <target>.json results with committed baselines")
    gate.add_argument("results", nargs="+", metavar="RESULTS.json")
    gate.add_argument("--baselines", type=Path, default=Path("benchmarks/baselines"))
    for sub_parser in (run, gate):
        sub_parser.add_argument("--allow-missing-baseline", action="store_true",
                                help="pass targets that have no committed baseline (default: they fail)")
        sub_parser.add_argument("--max-latency-regression", type=float, default=10.0, metavar="PCT")
        sub_parser.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS")
    parser.set_defaults(handler=handle)


def plan(names: list[str] | None) -> list[dict]:
    from ..targets import get_target, list_targets

    targets = [get_target(n) for n in names] if names else list(list_targets().values())
    return [{"target": t.name, "runs-on": t.runs_on[0] if len(t.runs_on) == 1 else list(t.runs_on),
             "backends": ",".join(dict.fromkeys(t.backend_names)),
             "self-hosted": "self-hosted" in t.runs_on} for t in targets]


def online_only(include: list[dict], online: list[list[str]]) -> tuple[list[dict], list[str]]:
    """Self-hosted entries some online runner carries every label of; and a notice per one left out."""
    kept, notices = [], []
    for entry in include:
        labels = entry["runs-on"] if isinstance(entry["runs-on"], list) else [entry["runs-on"]]
        if not entry["self-hosted"] or any(set(labels) <= set(runner) for runner in online):
            kept.append(entry)
        else:
            notices.append(f"target {entry['target']}: no online runner has the labels {labels}; its job is skipped")
    return kept, notices


def _online_runners(path: Path) -> list[list[str]]:
    from ..errors import InputError

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--online-runners {path} is not a readable JSON file: {exc}", field="--online-runners") from None
    if not isinstance(value, list) or not all(isinstance(r, list) and all(isinstance(x, str) for x in r) for r in value):
        raise InputError(f"--online-runners {path} must be a JSON list of label lists, e.g. [[\"self-hosted\", "
                         "\"rpi5\"]]", field="--online-runners")
    return value


def handle(args) -> int:
    if args.action == "run":
        return _run(args)
    if args.action == "gate":
        return _gate(args.results, args.baselines, args.max_latency_regression, args.max_accuracy_drop,
                     allow_missing=args.allow_missing_baseline)
    include = plan(args.targets)
    if args.runners != "all":
        include = [e for e in include if e["self-hosted"] == (args.runners == "self-hosted")]
    if args.online_runners is not None:
        include, notices = online_only(include, _online_runners(args.online_runners))
        for notice in notices:
            print(f"::notice::{notice}" if args.format == "github" else f"note: {notice}", file=sys.stderr)
    if args.format == "github":
        print(json.dumps({"include": include}, separators=(",", ":")))
    elif args.format == "json":
        print_json({"include": include})
    else:
        print(table([[e["target"], json.dumps(e["runs-on"]), e["backends"]] for e in include],
                    ["target", "runs-on", "backends"]))
    return 0


def _run(args) -> int:
    from ..bench import BenchConfig, BenchProtocol, gate, run_bench
    from ..bench.report import markdown_table
    from ..targets import fit, get_target, list_targets

    names = args.run_targets or args.targets or list(list_targets())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    protocol = BenchProtocol() if args.repeats is None else BenchProtocol(repeats=args.repeats)
    documents, written, failures = [], [], []
    for name in names:
        target = get_target(name)
        fitted = fit(target)
        if fitted.mode == "skipped":
            print(f"{name}: skipped ({fitted.reason})", file=sys.stderr)
            continue
        out = args.out_dir / f"{name}.json"
        print(f"{name}: {fitted.mode} → {out}", file=sys.stderr)
        document = run_bench(BenchConfig(models=args.models, out=out, workload=args.workload, eval=args.eval,
                                         target=target, protocol=protocol, argv=sys.argv[1:]))
        documents.append(document)
        written.append(out)
        failed, notes = gate(document, require_measured=False)  # a device's own runner measures it
        failures += failed
        for note in notes:
            print(f"{name}: {note}", file=sys.stderr)
    if documents:
        (args.out_dir / "report.md").write_text(markdown_table(documents) + "\n", encoding="utf-8")
        print(f"wrote {args.out_dir / 'report.md'}")
    for line in failures:
        print(f"gate: {line}", file=sys.stderr)
    gate = _gate(written, args.baselines, args.max_latency_regression, args.max_accuracy_drop,
                 allow_missing=args.allow_missing_baseline)
    return 1 if failures or gate else 0


def _gate(results, baselines: Path, max_latency: float, max_drop: float, *, allow_missing: bool = False) -> int:
    from ..bench import load_results
    from ..bench.compare import compare

    regressions = 0
    for path in map(Path, results):
        document = load_results(path)
        name = document["target"]["name"]
        baseline = baselines / f"{name}.json"
        if not baseline.exists():
            if allow_missing:
                print(f"{name}: no baseline at {baseline}; passed because --allow-missing-baseline was given")
                continue
            print(f"{name}: FAILED: no baseline at {baseline}, so nothing shows it did not regress; commit one "
                  f"(copy these results there) or pass --allow-missing-baseline", file=sys.stderr)
            regressions += 1
            continue
        deltas = compare(load_results(baseline), document, max_latency_regression=max_latency,
                         max_accuracy_drop=max_drop)
        bad = [d for d in deltas if d.verdict == "regression"]
        regressions += len(bad)
        print(f"{name}: {len(bad)} regression(s) against {baseline}")
        for delta in deltas:
            print(f"  {delta.name}: {delta.verdict} {'; '.join(delta.reasons)}")
    return 1 if regressions else 0
