"""Issue 21's footprint targets: each agent of `edgeagent demo --generative` alone in a fresh
process — `act()` p50 and p90 over test-split utterances, and the process's peak RSS (the model,
its runtime and the tokenizer, as a device would hold them).

    python benchmarks/generative_agent.py --home HOME [--utterances 60] [--out results/generative_agent.json]

HOME is the EDGEAGENT_HOME `edgeagent demo` and `edgeagent demo --generative` built. Targets:
the generative student INT4 on onnxruntime at p50 ≤ 100 ms and peak RSS ≤ 300 MB.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--utterances", type=int, default=60)
    parser.add_argument("--out", default="results/generative_agent.json")
    args = parser.parse_args(argv)
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
