"""`edgeagent targets list|show NAME|detect [--format json]`."""

from __future__ import annotations

from ._common import add_format, print_json, table


def register(sub) -> None:
    parser = sub.add_parser("targets", help="hardware target profiles and this machine's fit to them")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every target (built-in and on EDGEAGENT_TARGETS_PATH)")
    add_format(listing)
    show = actions.add_parser("show", help="one target's profile")
    show.add_argument("name", help="target name, .toml path, or host")
    add_format(show)
    detect = actions.add_parser("detect", help="this machine: CPU flags, cores, memory, GPUs, backends, fits")
    add_format(detect)
    parser.set_defaults(handler=handle)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def handle(args) -> int:
    from ..targets import detect, fit, get_target, host_target, list_targets

    if args.action == "list":
        host = host_target()
        rows = [{**t.to_json(), "fit": fit(t, host).to_json()} for t in list_targets().values()]
        if args.format == "json":
            print_json(rows)
        else:
            print(table([[r["name"], r["architecture"], f"{r['threads']}/{r['cores']}", _mib(r["memory_bytes"]),
                          ",".join(b["name"] + (f":{b['device']}" if b["device"] else "") for b in r["backends"]),
                          r["fit"]["mode"]] for r in rows],
                        ["target", "arch", "threads/cores", "memory", "backends", "here"]))
        return 0
    if args.action == "show":
        target = get_target(args.name)
        data = {**target.to_json(), "fit": fit(target).to_json()}
        if args.format == "json":
            print_json(data)
        else:
            for key, value in data.items():
                print(f"{key:>20}: {value}")
        return 0
    report = detect()
    if args.format == "json":
        print_json(report)
        return 0
    print(f"architecture  {report['architecture']} ({report['cpu']})")
    print("cpu flags     " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["cpu_flags"].items()))
    print(f"cores         {report['cores']}; memory {_mib(report['memory_bytes'])}")
    print("gpus          " + (", ".join(g["name"] for g in report["gpus"]) or "none"))
    print("backends      " + ", ".join(f"{k}={'usable' if v else 'no'}" for k, v in report["backends"].items()))
    for name, fitted in report["targets"].items():
        print(f"target        {name}: {fitted['mode']} ({fitted['reason']})")
    return 0
