"""The agent runtime: EdgeAgent.load/act, `agent predict` on files with bad lines, the simulated home."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hassil")

from edgeagent.agent.home import SimulatedHome  # noqa: E402
from edgeagent.agent.runtime import NOT_UNDERSTOOD, EdgeAgent, ToolCall  # noqa: E402
from edgeagent.cli.main import main  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402

pytestmark = pytest.mark.torch


def test_act_returns_a_tool_call(agent_dir):
    agent = EdgeAgent.load(agent_dir)
    assert agent.artifact.precision == "int8" and agent.artifact.backend == "onnxruntime"
    call = agent.act("turn on the desk lamp in the kitchen")
    assert call.intent in agent.decoder.intents + [NOT_UNDERSTOOD]
    assert 0 <= call.confidence <= 1 and call.latency_ms > 0
    assert agent.act("   ").intent == NOT_UNDERSTOOD and agent.act("").intent == NOT_UNDERSTOOD
    long = agent.act("turn on the lights " * 100)
    assert long.truncated is True
    fp32 = EdgeAgent.load(agent_dir, precision="fp32")
    assert fp32.artifact.precision == "fp32"
    with pytest.raises(InputError, match="present"):
        EdgeAgent.load(agent_dir, precision="fp16")
    with pytest.raises(InputError, match="registered backends"):
        EdgeAgent.load(agent_dir, backend="nope")


def test_predict_prints_one_json_line_per_input_and_survives_bad_lines(agent_dir, tmp_path, capsys):
    lines = tmp_path / "in.txt"
    lines.write_bytes(b"turn off the kitchen light\n\n\xff\xfe broken\nset the desk lamp to 40%\n")
    assert main(["agent", "predict", "--file", str(lines), "--artifacts", str(agent_dir), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4
    for record in records:
        assert {"text", "intent", "slots", "confidence"} <= set(record)
    assert records[1]["intent"] == NOT_UNDERSTOOD
    assert "not UTF-8" in records[2]["error"] and records[3]["text"] == "set the desk lamp to 40%"
    assert main(["agent", "predict", "dim the lights", "--artifacts", str(agent_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "dim the lights"
    assert main(["agent", "predict", "x", "--artifacts", str(tmp_path)]) == 1
    assert "agent folder" in capsys.readouterr().err


def test_the_simulated_home_changes_state():
    home = SimulatedHome()
    handlers = home.handlers()
    handlers["HassTurnOn"](ToolCall("HassTurnOn", {"name": "kitchen light"}))
    kitchen = next(d for d in home.devices if d.name == "kitchen light")
    assert kitchen.state["on"] is True
    handlers["HassLightSet"](ToolCall("HassLightSet", {"area": "kitchen", "brightness": 30}))
    assert kitchen.state["brightness"] == 30
    # "the kitchen lights" tagged as a name is the kind of device in that area, not a device's name.
    call = ToolCall("HassLightSet", {"area": "kitchen", "name": "lights", "brightness": 40})
    changed = handlers["HassLightSet"](call)
    assert changed["changed"] == ["kitchen light"] and kitchen.state["brightness"] == 40
    handlers["HassTurnOff"](ToolCall("HassTurnOff", {"area": "living room"}))
    assert next(d for d in home.devices if d.name == "ceiling light").state["on"] is False
    handlers["HassShoppingListAddItem"](ToolCall("HassShoppingListAddItem", {"item": "milk"}))
    assert home.lists["shopping list"] == ["milk"]
    handlers["HassStartTimer"](ToolCall("HassStartTimer", {"minutes": 5}))
    assert home.timers == [{"name": None, "seconds": 300}]


def test_tools_are_called_with_the_tool_call(agent_dir):
    agent = EdgeAgent.load(agent_dir)
    seen = []
    for intent in agent.decoder.intents:
        agent.tool(intent)(lambda call: seen.append(call.intent) or "done")
    call, result = agent.handle("turn on the desk lamp")
    if call.understood:
        assert result == "done" and seen == [call.intent]
    else:
        assert result is None and not seen


def test_batches_answer_as_one_by_one(agent_dir):
    texts = ["turn off the kitchen light", "", "set the desk lamp to 40%", "what is the temperature",
             "turn on the lights " * 40, "start a timer for 5 minutes"]
    fp32 = EdgeAgent.load(agent_dir, precision="fp32")
    assert fp32.batch_invariant
    for one, batched in zip(map(fp32.act, texts), fp32.act_batch(texts)):
        assert (batched.intent, batched.slots, batched.truncated) == (one.intent, one.slots, one.truncated)
        assert batched.confidence == pytest.approx(one.confidence, abs=1e-5)
    # Dynamic INT8 scales activations from the whole batch, so its agent runs items one by one.
    dynamic = EdgeAgent.load(agent_dir, precision="int8")
    assert not dynamic.batch_invariant
    assert [c.to_json() | {"latency_ms": 0} for c in dynamic.act_batch(texts)] == \
        [dynamic.act(t).to_json() | {"latency_ms": 0} for t in texts]


def test_demo_rebuilds_steps_made_from_other_data(tmp_path):
    from edgeagent.agent.demo import _forget_stale

    teacher, student, agent, results = (tmp_path / "teacher", tmp_path / "student", tmp_path / "agent",
                                        tmp_path / "bench.json")
    for folder, record, data in ((teacher, "config.json", "new"), (student, "config.json", "old"),
                                 (agent, "labels.json", "new")):
        folder.mkdir()
        (folder / record).write_text(json.dumps({"data": data}))
    (tmp_path / "student.checkpoints").mkdir()
    results.write_text("{}")
    _forget_stale([(teacher / "config.json", teacher, "new"), (student / "config.json", student, "new"),
                   (agent / "labels.json", agent, "new")], results)
    assert teacher.is_dir()  # built from this data: kept
    assert not student.exists() and not (tmp_path / "student.checkpoints").exists()
    assert not agent.exists() and not results.exists()  # built on the stale student
