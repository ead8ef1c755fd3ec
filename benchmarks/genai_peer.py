"""onnxruntime-genai as a peer: prefill latency, decode tokens/s and greedy tokens of a model
folder its builder wrote, on token ids given by the caller (so both sides see the same prompt).

Runs in its own virtual environment (onnxruntime-genai may pin another onnxruntime) and
imports nothing from edgeagent:

    python -m venv /work/venvs/genai && /work/venvs/genai/bin/pip install onnxruntime-genai onnx-ir \
        torch transformers -c constraints.txt
    /work/venvs/genai/bin/python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p int4 -e cpu
    /work/venvs/genai/bin/python benchmarks/genai_peer.py --model OUT --prompts prompts.json --out genai.json

prompts.json is a list of token-id lists (benchmarks/decoder_weight_only.py --dump-prompts
writes the same chat-templated prompts it uses); the first one is timed. Timings: medians of
`--repeats` runs, each the prefill (append_tokens) and the median of 64 generate_next_token calls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _with_threads(model_dir: Path, threads: int) -> Path:
    """A copy of the genai config (weights linked) pinning intra_op_num_threads."""
    tmp = Path(tempfile.mkdtemp(prefix="genai-peer-"))
    for item in model_dir.iterdir():
        (tmp / item.name).symlink_to(item.resolve())
    config = json.loads((model_dir / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    config["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    (tmp / "genai_config.json").unlink()
    (tmp / "genai_config.json").write_text(json.dumps(config))
    return tmp


def run(model, og, prompt: list[int], new_tokens: int) -> tuple[list[int], float, list[float]]:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + new_tokens, batch_size=1)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens([prompt])
    prefill = time.perf_counter() - start
    steps = []
    while not generator.is_done():
        start = time.perf_counter()
        generator.generate_next_token()
        steps.append(time.perf_counter() - start)
    tokens = [int(t) for t in generator.get_sequence(0)][len(prompt):]
    return tokens, prefill, steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import onnxruntime_genai as og

    prompts = json.loads(args.prompts.read_text())
    folder = _with_threads(args.model, args.threads)
    try:
        model = og.Model(str(folder))
        run(model, og, prompts[0], 4)  # warm-up
        prefill, decode = [], []
        for _ in range(args.repeats):
            _, first, steps = run(model, og, prompts[0], 65)
            prefill.append(first)
            decode.append(statistics.median(steps))
        tokens = [run(model, og, p, args.new_tokens)[0] for p in prompts]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"model": str(args.model), "genai": og.__version__, "threads": args.threads,
              "prompt_tokens": len(prompts[0]), "prefill_ms": round(1e3 * statistics.median(prefill), 1),
              "prefill_ms_range": [round(1e3 * min(prefill), 1), round(1e3 * max(prefill), 1)],
              "decode_tok_s": round(1 / statistics.median(decode), 1),
              "decode_tok_s_range": [round(1 / max(decode), 1), round(1 / min(decode), 1)],
              "tokens": tokens}
    print(json.dumps({k: v for k, v in result.items() if k != "tokens"}))
    if args.out:
        args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
