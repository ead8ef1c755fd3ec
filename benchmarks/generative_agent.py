"""Issue 21's footprint targets: each agent of `edgeagent demo --generative` alone in a fresh
process — `act()` p50 and p90 over test-split utterances, and the process's peak RSS (the model,
its runtime and the tokenizer, as a device would hold them).

    python benchmarks/generative_agent.py --home HOME [--utterances 60] [--out results/generative_agent.json]
    python benchmarks/generative_agent.py --stand-in WORK [--rounds 2] [--utterances 40]

HOME is the EDGEAGENT_HOME `edgeagent demo` and `edgeagent demo --generative` built. Targets:
the generative student INT4 on onnxruntime at p50 ≤ 100 ms and peak RSS ≤ 300 MB.

`--stand-in WORK` needs no demo: it copies the demo student's layers out of SmolLM2 (10 of 30,
untrained), exports it and builds its INT4 agent twice, with the float32 embedding table and with
`embeddings=int4` (the tied table shared with the 4-bit head, the demo's build), then measures
both in alternating fresh processes. Sizes and RSS do not depend on the weights' values; accuracy
and the p50 of an untrained model's calls are not the trained student's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._provenance import provenance  # noqa: E402

SYSTEMS = (("router-int8", "agent", "onnxruntime", "int8"),
           ("generative-student-int4", "generative", "onnxruntime", "int4"),
           ("generative-student-int4-openvino", "generative", "openvino", "int4"),
           ("generative-student-int8", "generative", "onnxruntime", "int8"),
           ("generative-teacher-fp32", "generative-teacher", "onnxruntime", "fp32"))

CHILD = r"""
import json, resource, sys, time
import numpy as np
from edgeagent.agent.runtime import EdgeAgent
from edgeagent.workloads import ha_intents
folder, backend, precision, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
test = ha_intents.generate("test")
texts = [e.text for e in test[::max(1, len(test) // count)][:count]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
agent = EdgeAgent.load(folder, backend=backend, precision=precision)
for text in texts[:3]:
    agent.act(text)
times = []
for text in texts:
    start = time.perf_counter()
    agent.act(text)
    times.append((time.perf_counter() - start) * 1e3)
print(json.dumps({"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_load_mb": before / 1024, "utterances": len(texts)}))
"""


STAND_IN_BUILDS = ("float32-embeddings", "shared-int4-table")


def build_stand_in(work: Path) -> None:
    """The demo student's shape, untrained, exported and built both ways into WORK."""
    from edgeagent.agent.generative import build_generative_agent
    from edgeagent.agent.generative_demo import STUDENT_BUILD_OPTIONS, STUDENT_RECIPE
    from edgeagent.causal import export_causal_lm
    from edgeagent.causal.finetune import student_from_teacher, student_layers
    from edgeagent.causal.sources import load_causal_lm, packaged_gguf, write_hf_folder

    ir = work / "student-ir"
    if not (ir / "ir.json").is_file():
        loaded = load_causal_lm(packaged_gguf())
        layers = student_layers(loaded.model.config.num_hidden_layers, STUDENT_RECIPE["num_layers"])
        write_hf_folder(student_from_teacher(loaded.model, layers), loaded.tokenizer, work / "student")
        export_causal_lm(work / "student", ir, max_length=1024)
    for name, options in zip(STAND_IN_BUILDS, (None, STUDENT_BUILD_OPTIONS)):
        if not (work / name / "agent.json").is_file():
            build_generative_agent(ir, work / name, builds=(("onnxruntime", "int4"),), options=options)


def stand_in(work: Path, rounds: int, utterances: int) -> dict:
    """Build the stand-in (in a process of its own: a child's peak RSS starts at its parent's, and
    the build holds SmolLM2 in torch), then measure both builds in alternating fresh processes."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); "
                    f"from benchmarks.generative_agent import build_stand_in; from pathlib import Path; "
                    f"build_stand_in(Path({str(work)!r}))"], check=True)
    rows: dict[str, list] = {name: [] for name in STAND_IN_BUILDS}
    for _ in range(rounds):
        for name in STAND_IN_BUILDS:
            done = subprocess.run([sys.executable, "-c", CHILD, str(work / name), "onnxruntime", "int4",
                                   str(utterances)], capture_output=True, text=True)
            row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                   else {"error": (done.stderr.strip().splitlines() or ["?"])[-1]})
            rows[name].append(row)
            print(f"{name}: {row}", file=sys.stderr)
    return {"stand_in": "untrained: SmolLM2's layers copied, sizes and RSS only", "rounds": rows,
            "targets": {"shared_int4_table_rss_le_300mb": all(r.get("peak_rss_mb", float("inf")) <= 300
                                                              for r in rows["shared-int4-table"])}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--home")
    where.add_argument("--stand-in", type=Path, help="build an untrained student of the demo's shape here")
    parser.add_argument("--rounds", type=int, default=2, help="--stand-in: alternating rounds")
    parser.add_argument("--utterances", type=int, default=60)
    parser.add_argument("--out", default="results/generative_agent.json")
    args = parser.parse_args(argv)
    if args.stand_in:
        args.stand_in.mkdir(parents=True, exist_ok=True)
        document = {"benchmark": "generative_agent", "command": "python benchmarks/generative_agent.py "
                    + " ".join(argv or sys.argv[1:]), "provenance": provenance(),
                    **stand_in(args.stand_in, args.rounds, args.utterances)}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(document["targets"]))
        return 0
    home = Path(args.home)
    rows = {}
    for name, folder, backend, precision in SYSTEMS:
        if not (home / folder).is_dir():
            print(f"{name}: {home / folder} missing, skipped", file=sys.stderr)
            continue
        done = subprocess.run([sys.executable, "-c", CHILD, str(home / folder), backend, precision,
                               str(args.utterances)], capture_output=True, text=True)
        if done.returncode != 0:
            rows[name] = {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]}", file=sys.stderr)
    student = rows.get("generative-student-int4", {})
    targets = {"student_int4_p50_le_100ms": student.get("p50_ms", float("inf")) <= 100,
               "student_int4_rss_le_300mb": student.get("peak_rss_mb", float("inf")) <= 300}
    document = {"benchmark": "generative_agent", "command": "python benchmarks/generative_agent.py "
                + " ".join(argv or sys.argv[1:]), "provenance": provenance(), "systems": rows, "targets": targets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
