"""`edgeagent agent predict [TEXT] [--file FILE] ... --format jsonl`, `edgeagent agent chat`, `edgeagent demo`."""

from __future__ import annotations

import json
import sys

MAX_FILE_BYTES = 256 << 20  # `agent predict --file`: one utterance per line


def register(sub) -> None:
    agent = sub.add_parser("agent", help="an agent folder: predict tool calls, or chat with a simulated home")
    actions = agent.add_subparsers(dest="action", metavar="ACTION", required=True)
    predict = actions.add_parser("predict", help="one JSON object per input line: text, intent (the tool), slots "
                                 "(its arguments), confidence")
    predict.add_argument("text", nargs="?", help="an utterance (else --file, else standard input)")
    predict.add_argument("--file", help="one utterance per line")
    chat = actions.add_parser("chat", help="talk to the simulated home")
    for parser in (predict, chat):
        parser.add_argument("--artifacts", help="agent folder (default: the one `edgeagent demo` builds)")
        parser.add_argument("--backend")
        parser.add_argument("--precision")
        parser.add_argument("--device", help="cpu, gpu, gpu.1, …: where the model runs")
        parser.add_argument("--home", metavar="FILE", help="the home's floors, areas and entities (YAML or JSON, as "
                            "Home Assistant's fixtures): slot values are resolved to its names")
        parser.add_argument("--context", metavar="JSON|KEY=VALUE",
                            help='the satellite\'s context, e.g. \'{"area": "kitchen"}\' or area=kitchen: it fills '
                                 'the area an utterance leaves out or calls "here"')
    predict.add_argument("--format", choices=("jsonl", "text"), default="jsonl")
    agent.set_defaults(handler=handle)
    demo = sub.add_parser("demo", help="fine-tune, distil, compile and benchmark the home-assistant agent")
    demo.add_argument("--rebench", action="store_true", help="benchmark again even if results are cached")
    demo.add_argument("--generative", action="store_true",
                      help="also the generative agent: SmolLM2 fine-tuned into a tool caller, its distilled "
                           "student, the router → generator cascade, and their comparison")
    demo.set_defaults(handler=handle_demo)


def _agent(args):
    from ..agent.demo import agent_folder, build
    from ..agent.runtime import AGENT_FILE, EdgeAgent

    folder = args.artifacts
    if folder is None:
        folder = agent_folder()
        if not (folder / AGENT_FILE).is_file():
            print("no agent artifacts yet: building them with `edgeagent demo` first", file=sys.stderr)
            build()
    return EdgeAgent.load(folder, backend=args.backend, precision=args.precision, device=getattr(args, "device", None),
                          home=getattr(args, "home", None))


def parse_context(text: str | None) -> dict | None:
    """`--context` as JSON ({"area": "kitchen"}) or KEY=VALUE pairs separated by commas."""
    from ..errors import InputError
    from ._common import parse_key_values

    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--context is not valid JSON: {exc}", field="--context") from None
    return parse_key_values([p for p in text.split(",") if p.strip()], "--context")


def _lines(args):
    if args.text is not None:
        yield args.text
        return
    if args.file:
        from ..safeio import read_bytes

        raw = read_bytes(args.file, max_bytes=MAX_FILE_BYTES, what="--file").splitlines()
    else:
        raw = sys.stdin.buffer.read().splitlines()
    for number, line in enumerate(raw, 1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ValueError(f"line {number} is not UTF-8 ({exc.reason} at byte {exc.start})")


def handle(args) -> int:
    context = parse_context(args.context)
    agent = _agent(args)
    agent.check_context(context)  # a context the home does not know fails now, before any line is read
    if args.action == "chat":
        return _chat(agent, context, args.home)
    for text in _lines(args):
        if isinstance(text, Exception):
            record = {"text": None, "intent": None, "slots": {}, "confidence": 0.0, "error": str(text)}
        else:
            record = agent.act(text, context).to_json()
        if args.format == "jsonl":
            print(json.dumps(record, ensure_ascii=False, default=str), flush=True)
        else:
            print(f"{record['intent']} {record['slots']} ({record['confidence']:.2f}) ← {record['text']!r}")
    return 0


def _chat(agent, context, home_file) -> int:
    from ..agent.home import SIMULATED_HOME, SimulatedHome, default_devices
    from ..agent.homefile import Home

    path = home_file or SIMULATED_HOME
    if agent.home is None:  # the simulated home's own file resolves names too
        agent.home = Home.load(path)
    home = SimulatedHome(default_devices(path))
    home.attach(agent)
    print("Talk to the simulated home (empty line or Ctrl-D to leave).")
    for line in sys.stdin:
        if not line.strip():
            break
        call, result = agent.handle(line.strip(), context)
        print(f"→ {call.intent} {call.slots} ({call.confidence:.2f}, {call.latency_ms:.2f} ms)")
        print(f"  {result if result is not None else 'no tool for that'}")
    return 0


def handle_demo(args) -> int:
    from ..agent.demo import build

    if getattr(args, "generative", False):
        from ..agent.generative_demo import build as build_generative, cascade_folder, generative_folder
        from ..paths import edgeagent_home

        document = build_generative()
        report = edgeagent_home() / "ha-intents" / "generative.md"
        print(report.read_text(encoding="utf-8") if report.is_file() else json.dumps(document["table"], indent=1))
        print(f"generative agent: {generative_folder()}\ncascade: {cascade_folder()}")
        print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in document["timings_s"].items()))
        return 0
    summary = build(rebench=args.rebench)
    print(summary["table"])
    print(f"\nagent: {summary['agent']}\nreport: {summary['report']} and {summary['plot']}")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings_s"].items()))
    return 0
