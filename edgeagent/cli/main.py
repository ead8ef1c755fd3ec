"""Entry point: builds the parser from the command modules and maps known errors to exit 1."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import (agent, backends, bench, compare, compile as compile_cmd, compress, distill, doctor,
               export as export_cmd, generate as generate_cmd, matrix, report, run as run_cmd, serve, targets)

COMMANDS = (backends, export_cmd, compile_cmd, run_cmd, generate_cmd, bench, report, compare, targets, matrix,
            distill, compress, agent, serve, doctor)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="edgeagent", description="Run agent models on constrained hardware.",
        epilog="Set EDGEAGENT_DEBUG=1 to see tracebacks.")
    parser.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="count", default=0,
                       help="more output: -v shows the SDKs' own warnings, -vv debug records")
    noise.add_argument("-q", "--quiet", action="store_true", help="errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 ok, 1 a problem with the input or environment (the
    message says what and how to fix it), 2 a usage error (argparse), 3 a bug in edgeagent, 130
    interrupted."""
    from ..errors import EdgeAgentError
    from ..log import configure
    from ..safeio import first_surrogate

    argv = sys.argv[1:] if argv is None else list(argv)
    for number, arg in enumerate(argv, 1):
        # Python hands over bytes that are not UTF-8 as lone surrogates, which every later print,
        # tokenizer and JSON writer would choke on; edgeagent's arguments are UTF-8 text.
        if isinstance(arg, str) and (at := first_surrogate(arg)) is not None:
            raw = arg.encode("utf-8", "surrogateescape")
            print(f"error: argument {number} ({raw!r}) is not valid UTF-8 (at character {at}); pass UTF-8 text "
                  "(and rename files whose names are not UTF-8)", file=sys.stderr)
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(-1 if args.quiet else args.verbose)
    debug = os.environ.get("EDGEAGENT_DEBUG", "") not in ("", "0")
    try:
        return int(args.handler(args) or 0)
    except EdgeAgentError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `edgeagent ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # InternalError or anything unexpected: a bug in edgeagent, not the input
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc}\nThis is a bug in edgeagent; rerun "
              "with EDGEAGENT_DEBUG=1 and report the traceback.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
