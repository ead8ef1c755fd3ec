"""Helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import InputError


def add_format(parser, choices=("text", "json")) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0],
                        help="output format (json for programs)")


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def parse_key_values(pairs: list[str] | None, flag: str = "--option") -> dict[str, str]:
    """Turn ["a=1", "b=x"] into {"a": "1", "b": "x"}."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} {pair!r} is not KEY=VALUE", field=flag)
        result[key.strip()] = value
    return result


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# --bf16 as the trainers take it (edgeagent.hostinfo.resolve_bf16).
BF16 = {"auto": "auto", "on": True, "off": False}
