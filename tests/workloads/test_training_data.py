"""The hand-written training resources stay apart from the robustness benchmark they are measured on.

Different authors wrote `edgeagent/workloads/data/` (training) and `benchmarks/data/` (evaluation)
without seeing each other's files; whole utterances that still came out identical were removed
from the training side. This keeps it that way: no training sentence without placeholders may
equal an evaluation utterance, ignoring case and punctuation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
TRAINING = ROOT / "edgeagent" / "workloads" / "data"
EVALUATION = ROOT / "benchmarks" / "data"


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_training_utterance_is_an_evaluation_utterance():
    evaluation = {_normal(json.loads(line)["text"]) for name in ("router_robustness.jsonl", "router_ood.jsonl")
                  for line in (EVALUATION / name).read_text(encoding="utf-8").splitlines() if line.strip()}
    assert len(evaluation) > 700
    checked = 0
    for path in sorted(TRAINING.glob("*.yaml")):
        for text in _strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
            # Whole utterances only: fillers and hesitations ("so", "um") are words, not sentences.
            if "{" in text or len(_normal(text).split()) < 2:
                continue
            checked += 1
            assert _normal(text) not in evaluation, f"{path.name}: {text!r} is an evaluation utterance"
    assert checked > 900  # the negatives and the placeholder-free phrasings
