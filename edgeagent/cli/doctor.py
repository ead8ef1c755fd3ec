"""`edgeagent doctor`: versions, CPU flags and usable backends."""

from __future__ import annotations

from ._common import add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser("doctor", help="report versions, CPU flags and usable backends")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..backend import list_backends
    from ..hostinfo import host_summary

    report = {**host_summary(), "backends": list_backends()}
    if args.format == "json":
        print_json(report)
        return 0
    print(f"machine  {report['system']} {report['machine']}, {report['cpu']}")
    print(f"cpus     {report['usable_cpus']} usable of {report['cpu_count']}; memory "
          f"{(report['memory_bytes'] or 0) / 2**30:.1f} GiB")
    print("flags    " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["cpu_flags"].items()))
    print("software " + ", ".join(f"{k} {v}" for k, v in report["software"].items() if v))
    print("missing  " + (", ".join(k for k, v in report["software"].items() if not v) or "-"))
    for row in report["backends"]:
        state = "usable" if row["available"] else f"unavailable: {row['reason']}"
        hint = f" ({row['install_hint']})" if row.get("install_hint") and not row["available"] else ""
        print(f"backend  {row['name']}: {state}{hint}")
    return 0
