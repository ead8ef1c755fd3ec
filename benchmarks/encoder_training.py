"""The demo's encoder trainings, float32 against bf16 autocast, side by side.

`edgeagent demo` fine-tunes the teacher (all-MiniLM-L6-v2 with the joint intent + slot heads)
and distils the four-layer student; both now run their forward pass under
`torch.autocast("cpu", torch.bfloat16)` where the CPU computes bf16 natively. This measures what
that buys on this machine: the same first N ha-intents training sentences, the same seed, one
epoch of each training per mode, the modes interleaved within each round so that a noisy
neighbour slows both alike. A figure is the median over rounds of the epoch's wall time
(training steps only: the teacher's cached targets and evaluation are outside the timer). The
mean training loss of each epoch is printed beside it: the two modes see the same batches, so
the losses should agree to a few percent.

    python benchmarks/encoder_training.py [--sentences 2048] [--rounds 3] [--out results/encoder_training.json]

Needs the train and agent extras.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._provenance import provenance  # noqa: E402

COMMAND = "python benchmarks/encoder_training.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2048, help="training sentences per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results/encoder_training.json")
    args = parser.parse_args(argv)

    import torch

    from edgeagent.agent import demo
    from edgeagent.distill import distill, finetune, student_from_teacher
    from edgeagent.distill.workflow import new_teacher
    from edgeagent.hostinfo import bf16_support
    from edgeagent.workloads import ha_intents

    workload = ha_intents.HAIntents(split="test")
    task = workload.task
    train = workload.training_examples("train", seed=0)[:args.sentences]
    # One teacher for every student round, so the students learn from the same targets.
    reference_teacher = finetune(new_teacher(task), train, task=task, epochs=1, lr=demo.TEACHER_LR, progress=False)
    rows: dict[str, dict[str, list[float]]] = {}
    for round_ in range(args.rounds):
        for mode in (False, True):
            name = "bf16" if mode else "fp32"
            teacher = finetune(new_teacher(task), train, task=task, epochs=1, lr=demo.TEACHER_LR, seed=0,
                               progress=False, bf16=mode)
            student = student_from_teacher(reference_teacher, task_data=[e["input_ids"] for e in train],
                                           tokenizer=workload.tokenizer, **demo.STUDENT)
            student = distill(reference_teacher, student, train, task=task, epochs=1, lr=demo.STUDENT_LR,
                              hidden_loss="mse", group_by_length=demo.STUDENT_GROUP_BY_LENGTH, seed=0,
                              progress=False, bf16=mode)
            for kind, model in (("teacher", teacher), ("student", student)):
                epoch = model.training_history[0]
                row = rows.setdefault(f"{kind} {name}", {"seconds": [], "loss": []})
                row["seconds"].append(epoch["seconds"])
                row["loss"].append(epoch["loss"])
                print(f"round {round_ + 1} {kind} {name}: {epoch['seconds']:.1f} s, loss {epoch['loss']:.4f}",
                      flush=True)
    summary = {key: {"median_s": statistics.median(v["seconds"]), "seconds": v["seconds"], "loss": v["loss"]}
               for key, v in rows.items()}
    print(f"\n{len(train)} sentences, one epoch, median of {args.rounds} interleaved rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 support {bf16_support()}")
    print("| training | fp32 s | bf16 s | speed-up | loss fp32 / bf16 |\n|---|---|---|---|---|")
    for kind in ("teacher", "student"):
        fp32, bf16 = summary[f"{kind} fp32"], summary[f"{kind} bf16"]
        print(f"| {kind} | {fp32['median_s']:.1f} | {bf16['median_s']:.1f} | "
              f"{fp32['median_s'] / bf16['median_s']:.2f}x | "
              f"{statistics.median(fp32['loss']):.4f} / {statistics.median(bf16['loss']):.4f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": COMMAND + " " + " ".join(argv or sys.argv[1:]), "sentences": len(train),
                               "rounds": args.rounds, "results": summary,
                               "provenance": {**provenance(), "bf16": bf16_support(),
                                              "torch_threads": torch.get_num_threads()}}, indent=2))
    print(f"→ {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
