"""Generative agent folders and the router → generator cascade, on real models.

The generator is the tiny random Llama of tests/decoders.py exported and compiled for ONNX
Runtime (INT4 and fp32): its answers are meaningless, but every one must be a tool call that
validates against one Home Assistant tool (the grammar), or not_understood with the reason.
The router is the tiny trained agent folder of tests/conftest.py.
"""

from __future__ import annotations

import json

import pytest

from edgeagent.agent.cascade import ALWAYS_GENERATOR, Cascade, choose_threshold, write_cascade_folder
from edgeagent.agent.runtime import EdgeAgent
from edgeagent.cli.main import main
from edgeagent.errors import ArtifactError, InputError
from edgeagent.tasks import NOT_UNDERSTOOD, ToolCall

pytest.importorskip("torch")
pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def generative_dir(tmp_path_factory):
    pytest.importorskip("hassil")
    from edgeagent.agent.generative import build_generative_agent
    from edgeagent.causal import export_causal_lm
    from tests.decoders import tiny_llama

    from edgeagent.tasks.text_generation import TextGenerationTask
    from edgeagent.workloads.ha_tools import tool_registry

    root = tmp_path_factory.mktemp("generative")
    ir = export_causal_lm(tiny_llama(root / "hf"), root / "ir")
    # No system prompt: the tiny model has 128 positions.
    task = TextGenerationTask(tool_registry().declarations(), system_prompt=None, max_new_tokens=48)
    return build_generative_agent(ir.path, root / "agent", task=task,
                                  builds=(("onnxruntime", "int4"), ("onnxruntime", "fp32")))


class _opened:
    def __init__(self, folder, **kwargs):
        self.agent = EdgeAgent.load(folder, **kwargs)

    def __enter__(self):
        return self.agent

    def __exit__(self, *exc):
        self.agent.close()


@pytest.fixture(scope="module")
def generator(generative_dir):
    with _opened(generative_dir, precision="fp32") as agent:
        yield agent


def test_the_generative_folder_opens_like_a_router_folder(generative_dir, generator):
    record = json.loads((generative_dir / "agent.json").read_text())
    assert record["task"]["name"] == "text-generation" and set(record["artifacts"]) == {"onnxruntime-int4",
                                                                                         "onnxruntime-fp32"}
    registry = generator.task.registry()
    for text in ("turn on the kitchen lights", "what is the temperature in the bedroom"):
        call = generator.act(text)
        if call.understood or call.reason is None:
            # A completed call: one tool's name, arguments that validate against its schema.
            parsed, why = registry.parse(json.dumps({"name": call.intent, "arguments": call.slots}))
            assert parsed is not None, why
            assert call.confidence == 1.0 and call.text == text
        else:
            assert "max_new_tokens" in call.reason or "max_length" in call.reason


@pytest.mark.parametrize("text", ["", "   ", "\x1b[2J", "ℤℤℤ", 42, "turn on the light " * 60])
def test_text_that_means_nothing_is_not_understood_without_a_model_call(generator, text):
    call = generator.act(text)
    assert call.intent == NOT_UNDERSTOOD and call.reason


def test_a_budget_that_runs_out_is_not_understood_with_the_reason(generative_dir):
    from edgeagent.tasks.text_generation import TextGenerationTask

    with _opened(generative_dir, precision="fp32") as agent:
        agent.task.max_new_tokens = 3  # far too few for any call
        call = agent.act("turn on the kitchen lights")
        assert call.intent == NOT_UNDERSTOOD and "max_new_tokens" in call.reason and call.slots == {}
    with pytest.raises(InputError, match="max_new_tokens"):
        TextGenerationTask([{"name": "t"}], max_new_tokens=0)


def test_precision_is_chosen_and_int4_answers_too(generative_dir):
    with _opened(generative_dir, precision="int4") as agent:
        assert agent.artifact.precision == "int4"
        assert agent.act("lock the front door").intent in agent.task.intents + [NOT_UNDERSTOOD]


def test_agent_predict_and_serve_work_on_a_generative_folder(generative_dir, generator, capsys):
    assert main(["agent", "predict", "open the garage door", "--artifacts", str(generative_dir),
                 "--precision", "fp32"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["intent"] == generator.act("open the garage door").intent
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from edgeagent.serve import create_app

    with TestClient(create_app(generator)) as client:
        body = client.post("/v1/act", json={"text": "open the garage door"}).json()
        assert body["intent"] == record["intent"]
        assert client.post("/v1/act/batch", json={"texts": ["", "open the garage door"]}).json()["results"][0][
            "intent"] == NOT_UNDERSTOOD


def test_a_foreign_task_name_in_the_model_is_refused(generative_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(generative_dir, copy)
    record = json.loads((copy / "agent.json").read_text())
    record["task"] = {**record["task"], "name": "intent-slots"}
    (copy / "agent.json").write_text(json.dumps(record))
    with pytest.raises(ArtifactError):
        EdgeAgent.load(copy, precision="fp32")


def _call(intent, confidence, ms, slots=None):
    return ToolCall(intent, slots or {}, confidence, ms)


def test_choose_threshold_takes_the_best_accuracy_within_the_budget():
    router = [_call("A", 0.99, 1), _call("B", 0.6, 1), _call("A", 0.4, 1), _call(NOT_UNDERSTOOD, 0.9, 1)]
    generator = [_call("A", 1, 100)] * 4
    ok_router, ok_generator = [True, False, False, False], [True, True, True, True]
    free = choose_threshold(router, generator, ok_router, ok_generator)
    assert free["accuracy"] == 1.0 and free["threshold"] <= 0.99 and free["threshold"] > 0.6
    assert free["generator_share"] == 0.75 and free["router"]["accuracy"] == 0.25
    tight = choose_threshold(router, generator, ok_router, ok_generator, latency_budget_ms=2)
    assert tight["p50_ms"] <= 2 and tight["accuracy"] < 1.0
    with pytest.raises(InputError):
        choose_threshold(router, generator[:2], ok_router, ok_generator)


def test_the_cascade_says_who_answered_and_its_folder_loads(agent_dir, generative_dir, tmp_path, capsys):
    router = EdgeAgent.load(agent_dir)
    generator = EdgeAgent.load(generative_dir, precision="fp32")
    text = "turn off the kitchen light"
    only_router = EdgeAgent.cascade(router, generator, threshold=0.0)
    routed = router.act(text)
    call = only_router.act(text)
    assert call.answered_by == ("router" if routed.understood else "generator")
    always = EdgeAgent.cascade(router, generator, threshold=ALWAYS_GENERATOR)
    answer = always.act(text)
    assert answer.answered_by == "generator" and answer.latency_ms >= generator.act(text).latency_ms * 0.1
    batch = always.act_batch([text, ""])
    assert [c.answered_by for c in batch] == ["generator", "generator"]
    folder = write_cascade_folder(tmp_path / "cascade", agent_dir, generative_dir, threshold=0.5,
                                  selection={"note": "test"})
    loaded = EdgeAgent.load(folder, precision="fp32")
    assert isinstance(loaded, Cascade) and loaded.threshold == 0.5 and loaded.selection == {"note": "test"}
    assert main(["agent", "predict", text, "--artifacts", str(folder), "--precision", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["answered_by"] in ("router", "generator")
    loaded.close()
    (tmp_path / "cascade" / "cascade.json").write_text(json.dumps({"schema": "edgeagent.cascade/1",
                                                                   "router": "../nowhere", "generator": "x",
                                                                   "threshold": 0.5}))
    with pytest.raises(ArtifactError, match="missing"):
        EdgeAgent.load(tmp_path / "cascade")
    with pytest.raises(InputError, match="threshold"):
        EdgeAgent.cascade(router, generator)
