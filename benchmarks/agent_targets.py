"""Issue 8's targets: `edgeagent demo` from scratch, then the agent it built, on the ha-intents test split.

Steps:
  1. `EDGEAGENT_HOME=<fresh folder> edgeagent demo`, timed from scratch (target: at most 15 minutes),
     then once more with everything cached (target: under a minute).
  2. On the test split (names never seen in training): the teacher's fp32 intent accuracy
     (target ≥ 98 %), the student INT8's intent accuracy (≥ 97 %) and slot F1 (≥ 90 %), each within
     one point of the teacher's, all through onnxruntime with the workload's own metrics.
  3. `agent.act(text)` end to end (tokenize, infer, decode) on the student INT8 with onnxruntime:
     p50 over test sentences (target ≤ 1 ms).

    python benchmarks/agent_targets.py [--home DIR] [--out results/agent_targets.json]

With --home pointing at a finished demo folder, step 1 is skipped (the from-scratch time is then
not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._provenance import provenance  # noqa: E402

COMMAND = "python benchmarks/agent_targets.py"


def run_demo(home: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgeagent.cli.main", "demo"], check=True,
                   env={**os.environ, "EDGEAGENT_HOME": str(home)})
    return time.perf_counter() - start


def evaluate(path: Path, workload, **load) -> dict[str, float]:
    import edgeagent

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="agent-targets-") as scratch:
        if (path / "manifest.json").is_file():
            session = edgeagent.load_session(path, **load)
        else:  # an ONNX file: compile it where it is thrown away afterwards
            session = edgeagent.load_session(edgeagent.compile(path, "onnxruntime", "fp32", out=Path(scratch) / "a"))
        outputs, labels = {}, []
        with session:
            for feeds, batch_labels in workload.eval_batches(session.inputs):
                for name, value in session.run(feeds).items():
                    outputs.setdefault(name, []).append(value)
                labels.append(batch_labels)
    return workload.metrics({k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels))


def act_latency(agent_dir: Path, calls: int) -> dict[str, float]:
    from edgeagent.agent.runtime import EdgeAgent
    from edgeagent.workloads import ha_intents

    agent = EdgeAgent.load(agent_dir, backend="onnxruntime", precision="int8")
    texts = [e.text for e in ha_intents.generate("test")]
    for text in texts[:200]:
        agent.act(text)
    samples = []
    for i in range(calls):
        start = time.perf_counter_ns()
        agent.act(texts[i % len(texts)])
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {"p50_ms": samples[len(samples) // 2] / 1e6, "p90_ms": samples[int(len(samples) * 0.9)] / 1e6,
            "p99_ms": samples[int(len(samples) * 0.99)] / 1e6, "calls": calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a finished demo's EDGEAGENT_HOME (skips the from-scratch run)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("results/agent_targets.json"))
    args = parser.parse_args()

    from edgeagent.workloads import ha_intents

    summary: dict = {}
    keep = None
    if args.home is None:
        keep = tempfile.mkdtemp(prefix="edgeagent-demo-")
        args.home = Path(keep)
        summary["demo_from_scratch_s"] = run_demo(args.home)
        summary["demo_cached_s"] = run_demo(args.home)
        print(f"demo from scratch {summary['demo_from_scratch_s']:.0f} s, cached {summary['demo_cached_s']:.0f} s",
              flush=True)
    work, agent_dir = args.home / "ha-intents", args.home / "agent"
    workload = ha_intents.HAIntents(split="test")
    teacher = evaluate(work / "teacher" / "teacher.onnx", workload)
    student = evaluate(agent_dir / "onnxruntime-int8", workload)
    latency = [act_latency(agent_dir, args.calls) for _ in range(3)]
    summary.update({
        "teacher_fp32": teacher, "student_int8_onnxruntime": student,
        "act_p50_ms": statistics.median(r["p50_ms"] for r in latency), "act_runs": latency,
        "test_sentences": len(workload.encoded.examples)})
    checks = {
        "teacher intent ≥ 98 %": teacher["intent_accuracy"] >= 0.98,
        "student int8 intent ≥ 97 %": student["intent_accuracy"] >= 0.97,
        "student int8 slot F1 ≥ 90 %": student["slot_f1"] >= 0.90,
        "student intent within 1 point of teacher": teacher["intent_accuracy"] - student["intent_accuracy"] <= 0.01,
        "student slot F1 within 1 point of teacher": teacher["slot_f1"] - student["slot_f1"] <= 0.01,
        "act() p50 ≤ 1 ms": summary["act_p50_ms"] <= 1.0,
    }
    if "demo_from_scratch_s" in summary:
        checks["demo from scratch ≤ 15 min"] = summary["demo_from_scratch_s"] <= 900
        checks["demo cached < 1 min"] = summary["demo_cached_s"] < 60
    summary["targets"] = {name: "met" if ok else "NOT met" for name, ok in checks.items()}
    print(json.dumps({k: v for k, v in summary.items() if k != "act_runs"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "command": COMMAND, "home": str(args.home),
                                    "provenance": provenance()}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
