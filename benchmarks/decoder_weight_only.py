"""Weight-only recipes for a decoder IR, side by side in one run: size, prefill latency, decode
tokens/s and greedy agreement with the float32 IR.

    python benchmarks/decoder_weight_only.py --ir IR_DIR [--work DIR] [--prompts 40] [--repeats 5]

IR_DIR is a folder `edgeagent.export_causal_lm` wrote (export SmolLM2-135M-Instruct with
`python -c "from edgeagent.causal import export_causal_lm; export_causal_lm('…/SmolLM2-135M-Instruct.Q4_1.gguf', 'smol-ir')"`).
Recipes: ONNX Runtime float32, float32 with the transformer optimizer's RMSNorm fusions,
MatMulNBits INT8 and INT4 (accuracy_level 4, block 32), INT4 without accuracy_level, INT4 with
a float32 LM head, INT4 on exact min/max blocks (offset and float zero points) with an INT8 head; OpenVINO stateful float32 and
NNCF INT8/INT4 (`--openvino`), each with float32 and with the plugin's default (bf16) precision.

Timings are medians over `--repeats` rounds that interleave the recipes, so drift on a shared
machine lands on every recipe alike; each round's prefill is the median of 5 calls and its
decode figure the median per-token time of 64 greedy steps (`--repeats 0` skips timing).

Prompts: the 40 hand-written ones below, then (for `--prompts` over 40) Home Assistant test-split
utterances from `edgeagent.workloads.ha_intents`, evenly spaced; each under the chat template.
Agreement with float32, three ways:
  - free-running ("agree", "identical"): the recipe and float32 each greedy-decode `--new-tokens`
    tokens; the share of positions whose tokens match, and of prompts whose continuations are
    identical. One flipped token changes the rest of a sequence, so this counts near-ties twice;
  - teacher-forced ("forced"): the recipe reads float32's own continuation in one call and its
    argmax is compared with float32's token at each position (llama.cpp's `perplexity
    --kl-divergence` reports the same figure as "Same top p");
  - first divergence: the median position of the first differing token, and float32's own
    top-1 / top-2 logit margin there against its median margin over all positions (how close a
    call the flipped token was).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROMPTS = [
    "Turn on the kitchen lights.", "Dim the living room lights to 30 percent.", "Set a timer for ten minutes.",
    "What is the temperature in the bedroom?", "Open the garage door.", "Lock the front door.",
    "Play some jazz in the office.", "Add milk to my shopping list.", "Is the back door locked?",
    "Turn off all the lights upstairs.", "What is the capital of France?", "Write a haiku about rain.",
    "Explain what a KV cache is in one sentence.", "Give me three names for a cat.",
    "How many legs does a spider have?", "Translate 'good morning' into Spanish.",
    "What is 12 times 7?", "Name a planet with rings.", "Suggest a quick vegetarian dinner.",
    "What does a thermostat do?", "Close the blinds in the kitchen.", "Start the vacuum cleaner.",
    "Remind me to call mom at 6 pm.", "What's the weather like tomorrow?", "Set the heating to 21 degrees.",
    "Tell me a fun fact about octopuses.", "Why is the sky blue?", "List two primary colors.",
    "Turn the fan on in the bedroom.", "What time is sunset?", "Write one sentence about the sea.",
    "Which is larger, a mouse or an elephant?", "How do I boil an egg?", "Spell the word 'house'.",
    "What is the opposite of cold?", "Turn on the porch light at 8 pm.", "Mute the TV.",
    "What is the boiling point of water?", "Recommend a short book.", "Say hello in French.",
]


def prompt_texts(count: int) -> list[str]:
    """The hand-written prompts, then evenly spaced ha-intents test utterances up to `count`."""
    texts = PROMPTS[:count]
    if count > len(PROMPTS):
        from edgeagent.workloads import ha_intents

        test = ha_intents.generate("test")
        extra = count - len(PROMPTS)
        texts = texts + [e.text for e in test[::max(1, len(test) // extra)][:extra]]
    return texts


def chat_prompts(ir_dir: Path, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as a user message under the IR's chat template (jinja2 + tokenizers)."""
    import jinja2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ir_dir / "tokenizer.json"))
    template = json.loads((ir_dir / "tokenizer_config.json").read_text()).get("chat_template")
    if not template:
        return [tokenizer.encode(t).ids for t in texts]
    render = jinja2.Environment().from_string(template)
    return [tokenizer.encode(render.render(messages=[{"role": "user", "content": t}], add_generation_prompt=True),
                             add_special_tokens=False).ids for t in texts]


class OrtRunner:
    def __init__(self, path: Path, layers: int, threads: int) -> None:
        import onnxruntime as ort

        from edgeagent.causal import parity

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.step = parity.ort_step(path, layers, session_options=options)

    def reset(self) -> None:
        pass


class OvRunner:
    def __init__(self, model, config: dict) -> None:
        from edgeagent.causal.openvino_decoder import OVStatefulDecoder

        self.decoder = OVStatefulDecoder(model, config)

    def reset(self) -> None:
        self.decoder.request.reset_state()


def generate(runner, prompt: list[int], n: int, layout: dict) -> tuple[list[int], float, list[float]]:
    """Greedy tokens, prefill seconds, per-decode-step seconds."""
    from edgeagent.causal import parity

    ids = np.asarray([prompt], np.int64)
    mask = np.ones_like(ids)
    pos = parity.position_ids(mask)
    past = parity.empty_past(1, **layout)
    runner.reset()
    tokens, times = [], []
    for _ in range(n):
        start = time.perf_counter()
        if isinstance(runner, OvRunner):
            logits = runner.decoder.step(ids, mask, pos)
        else:
            logits, past = runner.step(ids, mask, pos, past)
        times.append(time.perf_counter() - start)
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        ids = np.asarray([[token]], np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
    return tokens, times[0], times[1:]


def forced_logits(runner, prompt: list[int], continuation: list[int], layout: dict) -> np.ndarray:
    """Logits [len(continuation), vocab] predicting each continuation token, from one call over
    the prompt and the continuation (teacher forcing)."""
    from edgeagent.causal import parity

    ids = np.asarray([prompt + continuation[:-1]], np.int64)
    mask = np.ones_like(ids)
    pos = parity.position_ids(mask)
    runner.reset()
    if isinstance(runner, OvRunner):
        logits = runner.decoder.step(ids, mask, pos)
    else:
        logits, _ = runner.step(ids, mask, pos, parity.empty_past(1, **layout))
    return logits[0, len(prompt) - 1:]


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Per row, the top-1 logit minus the top-2 logit."""
    top = np.partition(logits, -2, axis=-1)[:, -2:]
    return top[:, 1] - top[:, 0]


def build(ir, work: Path, with_openvino: bool, threads: int, wanted=lambda name: True) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    from edgeagent.causal.quantize_ort import OrtWeightOnlyOptions, quantize_weights_ort

    meta = ir.metadata
    layers = ir.num_layers
    recipes: dict = {}
    sizes: dict = {}
    reports: dict = {}
    work.mkdir(parents=True, exist_ok=True)
    recipes["ort-fp32"] = lambda: OrtRunner(ir.model.path, layers, threads)
    sizes["ort-fp32"] = ir.model.size_bytes
    fused = work / "fp32-rmsnorm-fused.onnx"
    if wanted("ort-fp32-fused") and not fused.exists():
        model = optimize_model(str(ir.model.path), model_type="gpt2", num_heads=meta["num_heads"],
                               hidden_size=meta["hidden_size"], opt_level=0, use_gpu=False)
        reports["ort-fp32-fused"] = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(fused))
    if wanted("ort-fp32-fused"):
        recipes["ort-fp32-fused"] = lambda: OrtRunner(fused, layers, threads)
        sizes["ort-fp32-fused"] = fused.stat().st_size
    ort_recipes = {
        "ort-int8": OrtWeightOnlyOptions(bits=8),
        # float32 compute on the INT8 weights: no int8 quantization of the activations per block
        "ort-int8-acc1": OrtWeightOnlyOptions(bits=8, accuracy_level=1),
        "ort-int4": OrtWeightOnlyOptions(bits=4),
        "ort-int4-acc0": OrtWeightOnlyOptions(bits=4, accuracy_level=0),
        "ort-int4-head-fp32": OrtWeightOnlyOptions(bits=4, lm_head="fp32"),
        # a tied model: one INT4 table for the embedding Gather and the head (onnxruntime-genai's layout)
        "ort-int4-embeddings-int4": OrtWeightOnlyOptions(bits=4, embeddings="int4"),
        # min/max blocks (exact on a GGUF's Q4_1 weights) and an INT8 head (Q8_0's grid)
        "ort-int4-offset-head-int8": OrtWeightOnlyOptions(bits=4, symmetric=False, zero_points="offset",
                                                          lm_head="int8"),
        "ort-int4-offset-head-int8-acc1": OrtWeightOnlyOptions(bits=4, symmetric=False, zero_points="offset",
                                                               lm_head="int8", accuracy_level=1),
        "ort-int4-offset-head-int8-acc0": OrtWeightOnlyOptions(bits=4, symmetric=False, zero_points="offset",
                                                               lm_head="int8", accuracy_level=0),
        "ort-int4-float-zp-head-int8": OrtWeightOnlyOptions(bits=4, symmetric=False, zero_points="float",
                                                            lm_head="int8"),
    }
    for name, options in ort_recipes.items():
        if not wanted(name):
            continue
        path = work / f"{name}.onnx"
        report = quantize_weights_ort(ir.model, path, options)
        reports[name] = {"quantized": len(report.quantized), "kept": [(k.module, k.reason) for k in report.kept],
                         "padded": sum(q.padded for q in report.quantized)}
        sizes[name] = report.bytes_after
        recipes[name] = (lambda p: lambda: OrtRunner(p, layers, threads))(path)
    if with_openvino:
        import openvino as ov

        from edgeagent.causal.openvino_decoder import (F32_CONFIG, OVWeightOptions,
                                                       compress_weights_openvino, to_stateful_openvino)

        f32 = {**F32_CONFIG, "INFERENCE_NUM_THREADS": str(threads)}
        default = {"INFERENCE_NUM_THREADS": str(threads)}
        for name, options in (("ov-fp32", None), ("ov-int8", OVWeightOptions(mode="int8_asym")),
                              ("ov-int4", OVWeightOptions(mode="int4_asym", group_size=128))):
            if not (wanted(name) or wanted(name + "-bf16")):
                continue
            xml = work / f"{name}.xml"
            if not xml.exists():
                model = to_stateful_openvino(ir.model.path, layers)
                if options is not None:
                    model, report = compress_weights_openvino(model, options, onnx_path=ir.model.path)
                    reports[name] = report.to_json()["precisions"]
                ov.save_model(model, str(xml), compress_to_fp16=False)
            sizes[name] = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
            recipes[name] = (lambda p: lambda: OvRunner(p, f32))(xml)
            recipes[name + "-bf16"] = (lambda p: lambda: OvRunner(p, default))(xml)
            sizes[name + "-bf16"] = sizes[name]
    return {"recipes": recipes, "sizes": sizes, "reports": reports}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("decoder-bench"))
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--openvino", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated recipe names")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--dump-prompts", type=Path, default=None,
                        help="write the chat-templated prompt ids (for benchmarks/genai_peer.py) and stop")
    parser.add_argument("--peer", type=Path, action="append", default=[],
                        help="a benchmarks/genai_peer.py result to add as a row (agreement vs ort-fp32)")
    args = parser.parse_args(argv)

    from edgeagent.causal import open_decoder_ir

    if args.dump_prompts:
        args.dump_prompts.write_text(json.dumps(chat_prompts(args.ir, prompt_texts(args.prompts))))
        return 0
    ir = open_decoder_ir(args.ir)
    layout = {"num_layers": ir.num_layers, "num_kv_heads": ir.num_kv_heads, "head_dim": ir.head_dim}
    only = set(filter(None, args.only.split(",")))
    built = build(ir, args.work, args.openvino, args.threads, wanted=lambda name: not only or name in only)
    names = [n for n in built["recipes"] if not only or n in only]
    runners = {n: built["recipes"][n]() for n in names}
    prompts = chat_prompts(args.ir, prompt_texts(args.prompts))
    timing_prompt = prompts[0]
    # Timings, recipes interleaved round by round.
    prefill: dict = {n: [] for n in names}
    decode: dict = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            generate(runners[name], timing_prompt, 4, layout)  # warm-up
            prefills = [generate(runners[name], timing_prompt, 1, layout)[1] for _ in range(5)]
            prefill[name].append(statistics.median(prefills))
            _, _, steps = generate(runners[name], timing_prompt, 65, layout)
            decode[name].append(statistics.median(steps))
    # Agreement with float32: free-running, teacher-forced, first divergence.
    reference = {i: generate(runners["ort-fp32"], p, args.new_tokens, layout)[0] for i, p in enumerate(prompts)} \
        if "ort-fp32" in runners else {}
    margins = {i: top2_margin(forced_logits(runners["ort-fp32"], p, reference[i], layout))
               for i, p in enumerate(prompts)} if reference else {}

    def timing(name: str) -> dict:
        if not prefill[name]:
            return {"prefill_ms": None, "prefill_ms_range": None, "decode_tok_s": None, "decode_tok_s_range": None}
        return {"prefill_ms": round(1e3 * statistics.median(prefill[name]), 1),
                "prefill_ms_range": [round(1e3 * min(prefill[name]), 1), round(1e3 * max(prefill[name]), 1)],
                "decode_tok_s": round(1 / statistics.median(decode[name]), 1),
                "decode_tok_s_range": [round(1 / max(decode[name]), 1), round(1 / min(decode[name]), 1)]}

    def agreement(outputs: dict, forced: dict | None) -> dict:
        if not reference:
            return {"token_agreement": None, "identical_continuations": None}
        positions = len(prompts) * args.new_tokens
        same = identical = 0
        first, margin_there = [], []
        for i in range(len(prompts)):
            tokens, ref = outputs.get(i, [])[:args.new_tokens], reference[i]
            same += sum(a == b for a, b in zip(tokens, ref))
            identical += tokens == ref
            j = next((k for k, (a, b) in enumerate(zip(tokens, ref)) if a != b), min(len(tokens), len(ref)))
            first.append(j)
            if j < len(ref):
                margin_there.append(float(margins[i][j]))
        row = {"token_agreement": round(same / positions, 4),
               "identical_continuations": f"{identical}/{len(prompts)}",
               "first_divergence_median": statistics.median(first),
               "fp32_margin_at_divergence_median": round(statistics.median(margin_there), 3) if margin_there else None}
        if forced is not None:
            row["forced_top1_agreement"] = round(sum(forced.values()) / positions, 4)
        return row

    rows = []
    for name in names:
        outputs, forced = {}, {}
        if reference:
            for i, prompt in enumerate(prompts):
                outputs[i] = generate(runners[name], prompt, args.new_tokens, layout)[0]
                guess = forced_logits(runners[name], prompt, reference[i], layout).argmax(-1)
                forced[i] = int((guess == np.asarray(reference[i])).sum())
        rows.append({"recipe": name, "size_mb": round(built["sizes"][name] / 1e6, 1), **timing(name),
                     **agreement(outputs, forced)})
    for peer in args.peer:
        result = json.loads(peer.read_text())
        size = sum(f.stat().st_size for f in Path(result["model"]).glob("model.onnx*"))
        rows.append({"recipe": f"genai:{Path(result['model']).name}", "size_mb": round(size / 1e6, 1),
                     "prefill_ms": result["prefill_ms"], "prefill_ms_range": result["prefill_ms_range"],
                     "decode_tok_s": result["decode_tok_s"], "decode_tok_s_range": result["decode_tok_s_range"],
                     **agreement(dict(enumerate(result["tokens"][:len(prompts)])), None)})
    print(f"# {ir.metadata.get('source')}  prompt {len(timing_prompt)} tokens, threads {args.threads}, "
          f"{args.repeats} interleaved rounds (median [min-max]); agreement over {len(prompts)} prompts × "
          f"{args.new_tokens} tokens vs ort-fp32")
    print(f"{'recipe':30} {'MB':>6} {'prefill ms':>18} {'decode tok/s':>20} {'agree':>7} {'identical':>9} "
          f"{'forced':>7} {'1st div':>7} {'margin':>7}")

    def cell(value, width: int, digits: int = 1) -> str:
        return f"{'–':>{width}}" if value is None else (f"{value:{width}.{digits}f}" if isinstance(value, float)
                                                        else f"{value!s:>{width}}")

    for r in rows:
        print(f"{r['recipe']:30} {r['size_mb']:6.1f} {cell(r['prefill_ms'], 7)} {str(r['prefill_ms_range']):>10} "
              f"{cell(r['decode_tok_s'], 7)} {str(r['decode_tok_s_range']):>12} {cell(r['token_agreement'], 7, 3)} "
              f"{cell(r['identical_continuations'], 9)} {cell(r.get('forced_top1_agreement'), 7, 3)} "
              f"{cell(r.get('first_divergence_median'), 7)} {cell(r.get('fp32_margin_at_divergence_median'), 7, 2)}")
    if margins:
        print(f"fp32 top-1/top-2 logit margin over its own continuations: median "
              f"{statistics.median(float(m) for ms in margins.values() for m in ms):.2f}")
    print("reports:", json.dumps(built["reports"]))
    print("rerun: python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    if args.out:
        import onnxruntime

        args.out.write_text(json.dumps({"rows": rows, "reports": built["reports"], "provenance": {
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "machine": platform.processor() or platform.machine(), "threads": args.threads}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
