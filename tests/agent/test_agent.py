"""The agent runtime: EdgeAgent.load/act, the agent folder's checks, `agent predict` on files with bad
lines, the simulated home."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hassil")

from edgeagent.agent.home import SimulatedHome  # noqa: E402
from edgeagent.agent.runtime import NOT_UNDERSTOOD, EdgeAgent, ToolCall  # noqa: E402
from edgeagent.cli.main import main  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402

pytestmark = pytest.mark.torch


def test_act_answers_what_the_model_says(agent_dir):
    from edgeagent.workloads import ha_intents

    agent = EdgeAgent.load(agent_dir)
    # The host target prefers onnxruntime (its host_rank) and INT8 first.
    assert agent.artifact.precision == "int8" and agent.artifact.backend == "onnxruntime"
    examples = ha_intents.generate("dev")[:120]
    # The tiny model (three epochs) is right far more often than chance (1 in 42), but unsure:
    # with the default threshold of 0.5 it would answer nearly everything with not_understood.
    sure = EdgeAgent.load(agent_dir, threshold=0.0)
    calls = [sure.act(e.text) for e in examples]
    assert all(0 <= c.confidence <= 1 and c.latency_ms > 0 and c.understood for c in calls)
    assert sum(c.intent == e.intent for c, e in zip(calls, examples)) / len(examples) > 0.4
    # Each answer is the argmax of the model's own logits, read through the task, and the default
    # threshold turns exactly the answers below 0.5 into not_understood.
    ids, _, _ = agent.reader.encode(examples[0].text)
    logits = agent.session.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["intent_logits"][0]
    assert calls[0].intent == agent.task.intents[int(logits.argmax())]
    for example, call in zip(examples[:20], calls):
        answer = agent.act(example.text)
        assert answer.confidence == pytest.approx(call.confidence, abs=1e-6)
        assert answer.intent == (call.intent if call.confidence >= 0.5 else NOT_UNDERSTOOD)
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
    seen = []
    always = EdgeAgent.load(agent_dir, threshold=0.0)  # every answer is understood
    for intent in always.task.intents:
        always.tool(intent)(lambda call: seen.append(call) or "done")
    call, result = always.handle("turn on the desk lamp")
    assert call.understood and result == "done" and seen == [call]
    never = EdgeAgent.load(agent_dir, threshold=1.0)  # no softmax over 42 intents reaches 1.0 here
    never.tool(call.intent)(lambda c: seen.append(c) or "done")
    other, result = never.handle("turn on the desk lamp")
    assert other.intent == NOT_UNDERSTOOD and result is None and seen == [call]


def test_an_agent_folder_whose_files_changed_is_refused(agent_dir, tmp_path):
    import shutil

    from edgeagent.errors import ArtifactError

    copy = tmp_path / "agent"
    shutil.copytree(agent_dir, copy)
    record = json.loads((copy / "agent.json").read_text())
    record["task"]["intents"] = record["task"]["intents"][:-1]  # one label short of the model's outputs
    (copy / "agent.json").write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="43 classes but the task's 'intent' labels list 42"):
        EdgeAgent.load(copy)
    shutil.copyfile(agent_dir / "agent.json", copy / "agent.json")
    EdgeAgent.load(copy).close()
    with open(copy / "tokenizer.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match="tokenizer.json was modified"):
        EdgeAgent.load(copy)
    (copy / "agent.json").write_text(json.dumps({"schema": "edgeagent.agent/0"}))
    with pytest.raises(ArtifactError, match="schema"):
        EdgeAgent.load(copy)


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
                                 (agent, "agent.json", "new")):
        folder.mkdir()
        (folder / record).write_text(json.dumps({"data": data}))
    (tmp_path / "student.checkpoints").mkdir()
    results.write_text("{}")
    _forget_stale([(teacher / "config.json", teacher, "new"), (student / "config.json", student, "new"),
                   (agent / "agent.json", agent, "new")], results)
    assert teacher.is_dir()  # built from this data: kept
    assert not student.exists() and not (tmp_path / "student.checkpoints").exists()
    assert not agent.exists() and not results.exists()  # built on the stale student


def test_calibration_fits_each_artifact_and_the_agent_applies_its_own(agent_dir, tmp_path):
    import shutil

    pytest.importorskip("scipy")
    from edgeagent.agent.calibrate import calibrate
    from edgeagent.workloads import ha_intents

    copy = tmp_path / "agent"
    shutil.copytree(agent_dir, copy)
    dev = ha_intents.HAIntents(split="dev").training_examples("dev")[::4]
    found = calibrate(copy, dev, fitted_on="a quarter of the dev split")
    assert set(found) == {"onnxruntime-fp32", "onnxruntime-int8"}
    for name, figures in found.items():
        assert figures["ece_after"] <= figures["ece_before"] + 1e-9, name
        assert figures["in_domain_rejection"] <= 0.02  # the threshold rejects about 1 % of in-domain dev
    agent = EdgeAgent.load(copy, precision="int8")
    assert agent.task.temperature == pytest.approx(found["onnxruntime-int8"]["temperature"])
    assert agent.reader.threshold == pytest.approx(found["onnxruntime-int8"]["threshold"])
    assert EdgeAgent.load(copy, precision="int8", threshold=0.9).reader.threshold == 0.9  # the caller's wins
    record = json.loads((copy / "agent.json").read_text())
    record["calibration"]["onnxruntime-int8"]["temperature"] = "hot"
    (copy / "agent.json").write_text(json.dumps(record))
    from edgeagent.errors import ArtifactError

    with pytest.raises(ArtifactError, match="calibration of onnxruntime-int8"):
        EdgeAgent.load(copy, precision="int8")


def test_context_and_home_flow_through_act_and_the_cli(agent_dir, capsys, tmp_path):
    pytest.importorskip("rapidfuzz")
    from edgeagent.agent.home import SIMULATED_HOME

    agent = EdgeAgent.load(agent_dir, threshold=0.0, home=SIMULATED_HOME)
    call = agent.act("turn on the light", {"area": "lounge"})  # the home's alias for the living room
    assert call.understood
    if "area" in agent.task.intent_slots.get(call.intent, ()) and "area" not in call.context:
        pytest.fail(f"the context area was not used for {call.intent}: {call.to_json()}")
    if call.context:
        assert call.slots["area"] == "Living Room" and call.resolved["area"]["id"] == "living_room"
    from edgeagent.errors import InputError

    with pytest.raises(InputError, match="not a area of the home"):
        agent.act("turn on the light", {"area": "attic"})
    assert main(["agent", "predict", "turn off the big light", "--artifacts", str(agent_dir), "--home",
                 str(SIMULATED_HOME), "--context", "area=kitchen"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"context", "resolved"} <= set(record)
    assert main(["agent", "predict", "x", "--artifacts", str(agent_dir), "--home", str(SIMULATED_HOME),
                 "--context", '{"area": "attic"}']) == 1
    assert "attic" in capsys.readouterr().err
