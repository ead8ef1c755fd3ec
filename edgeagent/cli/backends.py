"""`edgeagent backends`: which backends are registered and usable here."""

from __future__ import annotations

from ._common import add_format, print_json, table


def register(sub) -> None:
    parser = sub.add_parser("backends", help="list backends and whether they are usable here")
    add_format(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..backend import list_backends

    rows = list_backends()
    if args.format == "json":
        print_json(rows)
        return 0
    print(table([[r["name"], "yes" if r["available"] else "no", r["version"] or "-",
                  ",".join(r["devices"]) or "-", ",".join(r["precisions"]) or "-",
                  " ".join(x for x in (r["reason"], r.get("install_hint")) if x) or ""] for r in rows],
                ["backend", "available", "version", "devices", "precisions", "reason"]))
    return 0
