"""`edgeagent generate MODEL "PROMPT" [--max-new-tokens N] [--temperature T] [--format json]`.

MODEL is an artifact folder (with `--assets IR_DIR` when it holds no tokenizer) or a decoder IR
folder. `--chat` sends the prompt as one user message through the chat template; `--tools
FILE.json` (a list of {name, description, parameters}) constrains the answer to one call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from ._common import add_format, print_json


def register(sub) -> None:
    parser = sub.add_parser("generate", help="generate text (or one tool call) with a decoder")
    parser.add_argument("model", help="artifact folder or decoder IR folder")
    parser.add_argument("prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a user message")
    parser.add_argument("--system", default=None, help="a system message (implies --chat)")
    parser.add_argument("--tools", type=Path, default=None,
                        help="JSON file: a list of tools {name, description, parameters}; the "
                             "answer is one call that validates (implies --chat)")
    parser.add_argument("--assets", default=None, help="folder with tokenizer.json and the configs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None,
                        help="cpu, gpu, gpu.1, …: where an artifact runs (default: where it was built for)")
    add_format(parser)
    parser.set_defaults(handler=handle)


def _tools(path: Path):
    from .. import safeio
    from ..generate import Tool, ToolRegistry

    items = safeio.read_json(path, what="--tools file", error=lambda reason: InputError(
        f"--tools {path} {reason}; give a JSON list of tools {{name, description, parameters}}", field="--tools"))
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise InputError(f"--tools {path} must hold a JSON list of {{name, description, parameters}}",
                         field="--tools")
    unknown = sorted({k for t in items for k in t} - {"name", "description", "parameters"})
    if unknown:
        raise InputError(f"--tools {path}: unknown keys {unknown}; a tool has name, description, "
                         "parameters", field="--tools")
    return ToolRegistry(Tool(**t) for t in items)


def _load_options(args) -> dict | None:
    """--threads, plus the load options that put the model's backend on --device."""
    options = {"threads": args.threads} if args.threads else {}
    if args.device:
        from ..artifact import MANIFEST, open_artifact
        from ..backend import get_backend

        folder = Path(args.model)
        name = open_artifact(folder).backend if (folder / MANIFEST).is_file() else "onnxruntime"
        backend = get_backend(name)
        _, on_device = backend.split_options(backend.device_options(args.device))
        options = {**on_device, **options}
    return options or None


def handle(args) -> int:
    from ..generate import call_tool, load_decoder, stream
    from ..generate import generate as run_generate

    chat = args.chat or args.system is not None or args.tools is not None
    prompt = args.prompt
    if chat:
        prompt = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": args.prompt}]
    registry = _tools(args.tools) if args.tools is not None else None
    options = _load_options(args)
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "seed": args.seed}
    with load_decoder(args.model, assets=args.assets, options=options) as decoder:
        if registry is not None:
            outcome = call_tool(decoder, prompt, registry, max_new_tokens=args.max_new_tokens, **sampling)
            if args.format == "json":
                print_json({"complete": outcome.complete, "reason": outcome.reason,
                            "call": None if outcome.call is None else outcome.call.to_json(),
                            "generation": outcome.generation.to_json()})
            elif outcome.call is not None:
                print(json.dumps(outcome.call.to_json(), ensure_ascii=False))
            else:
                print(f"no complete call: {outcome.reason}", file=sys.stderr)
            return 0 if outcome.complete else 1
        if args.format == "json" or args.num_beams != 1:  # beams do not stream; generate checks them
            result = run_generate(decoder, prompt, max_new_tokens=args.max_new_tokens, stop=args.stop,
                                  num_beams=args.num_beams, **sampling)
            if args.format == "json":
                print_json(result.to_json())
            else:
                print(result.text)
            return 0
        chunks = stream(decoder, prompt, max_new_tokens=args.max_new_tokens, stop=args.stop, **sampling)
        for chunk in chunks:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        t = chunks.result.timings
        print(f"[{chunks.result.stop_reason}; {len(chunks.result.token_ids)} tokens; first token "
              f"{t.time_to_first_token_seconds * 1e3:.0f} ms; {t.decode_tokens_per_second:.1f} tokens/s]",
              file=sys.stderr)
    return 0
