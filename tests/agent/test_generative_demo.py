"""`edgeagent demo --generative` end to end on tiny models: the tiny Llama stands in for
SmolLM2's GGUF and a tiny router for the demo's, so each step (fine-tune, distil, export, compile,
cascade, comparison) runs for real in about two minutes."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("peft")
pytest.importorskip("hassil")


def test_the_generative_demo_builds_compares_and_caches(agent_dir, tmp_path, monkeypatch):
    from edgeagent.agent import generative_demo
    from edgeagent.agent.runtime import EdgeAgent
    from tests.decoders import tiny_llama

    home = tmp_path / "home"
    shutil.copytree(agent_dir, home / "agent")
    monkeypatch.setenv("EDGEAGENT_HOME", str(home))
    source = tiny_llama(tmp_path / "llama", layers=3, max_positions=512)
    monkeypatch.setattr("edgeagent.causal.sources.packaged_gguf", lambda: source)
    monkeypatch.setattr(generative_demo, "TEACHER_RECIPE", {"lora": True, "epochs": 1, "learning_rate": 3e-3,
                                                            "max_examples": 16, "batch_size": 8})
    monkeypatch.setattr(generative_demo, "STUDENT_RECIPE", {"num_layers": 2, "alpha": 0.5, "temperature": 2.0,
                                                            "epochs": 1, "max_examples": 16})
    monkeypatch.setattr(generative_demo, "STUDENT_BUILDS", (("onnxruntime", "int4"), ("onnxruntime", "fp32")))
    monkeypatch.setattr(generative_demo, "COMPARE_TEST", 6)
    monkeypatch.setattr(generative_demo, "COMPARE_ROBUST", 6)
    monkeypatch.setattr(generative_demo, "CHOOSE_DEV", 8)

    document = generative_demo.build(progress=False)
    assert set(document["table"]) == {"router-int8", "generative-teacher-fp32", "generative-student-int4", "cascade"}
    for row in document["table"].values():
        assert 0 <= row["test"]["exact_match"] <= 1 and row["test"]["p50_ms"] > 0
        assert "robustness" in row  # a checkout has benchmarks/data
    assert 0 <= document["cascade"]["threshold"] <= 1.01
    work = home / "ha-intents"
    assert json.loads((work / "gen-student" / "training.json").read_text())["recipe"]["layers"] == [0, 2]
    assert (work / "generative.md").read_text().startswith("| system |")
    # The INT4 student keeps one 4-bit table for its tied embedding and head; fp32 is as exported.
    manifests = {name: json.loads((home / "generative" / name / "manifest.json").read_text())
                 for name in ("onnxruntime-int4", "onnxruntime-fp32")}
    assert any("shares" in (q.get("reason") or "") for q in manifests["onnxruntime-int4"]["recipe"]["quantized"])
    assert "quantized" not in manifests["onnxruntime-fp32"]["recipe"]
    cascade = EdgeAgent.load(home / "cascade")
    assert cascade.act("turn on the kitchen light").answered_by in ("router", "generator")
    cascade.close()
    # A second build reuses every step and the comparison.
    again = generative_demo.build(progress=False)
    assert again["key"] == document["key"] and again["table"] == document["table"]
