"""Agent folders and text (issue 19, defects 2, 11 and 14), on a tiny intent-slots agent built in code:
a folder whose tokenizer or labels do not fit its model fails at load, not on a user's request; a
hostile agent.json is an ArtifactError; text the model was never meant for is not understood."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("tokenizers")

from edgeagent.agent.runtime import AGENT_FILE, EdgeAgent  # noqa: E402
from edgeagent.cli.main import main  # noqa: E402
from edgeagent.errors import ArtifactError  # noqa: E402
from edgeagent.tasks.intent_slots import IntentSlotTask  # noqa: E402
from tests.security import hostile  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return hostile.tiny_agent_folder(tmp_path_factory.mktemp("agent") / "agent")


@pytest.fixture(scope="module")
def agent(folder):
    return EdgeAgent.load(folder)


def test_the_tiny_agent_answers_what_its_votes_say(agent):
    call = agent.act("set the light to 50%")
    assert (call.intent, call.slots) == ("HassLightSet", {"name": "light", "percentage": 50})


@pytest.mark.parametrize("text", ["\x1b[31mturn on the light\x1b[0m", "turn on the light \x1b[31m",
                                  "turn on\x1b]0;title\x07 the light", "turn on the light\x9b31m"])
def test_terminal_escapes_never_become_slots(agent, text):
    """Defect 14: an escape code became a `percentage` slot of "31m"."""
    call = agent.act(text)
    assert call.intent == "HassTurnOn" and call.slots == {"name": "light"}
    assert "\x1b" not in call.text and "\x9b" not in call.text


@pytest.mark.parametrize("text", ["打开灯", "💡💡💡", "🎵 🎶 🎵 on", "\u202e😀😀\u202c"])
def test_text_outside_the_models_language_is_not_understood(agent, text):
    """Defect 14: Chinese text and emoji got confident intents from an English router."""
    call = agent.act(text)
    assert call.intent == "not_understood" and call.confidence == 0.0


def test_a_lone_surrogate_is_not_understood_and_never_raises(agent):
    calls = agent.act_batch(["turn on the light", "\ud800", "turn on \udcff the light"])
    assert [c.intent for c in calls] == ["HassTurnOn", "not_understood", "HassTurnOn"]
    json.dumps([c.to_json() for c in calls], ensure_ascii=False).encode("utf-8")  # answers stay valid UTF-8


def test_a_tokenizer_whose_ids_the_model_cannot_take_fails_at_load(tmp_path, capsys):
    """Defect 2: a hostile tokenizer.json made every request fail (exit 2, or 500 while /healthz said ok)."""
    tokenizer = hostile.tiny_tokenizer(tmp_path / "tok.json", extra_ids={"lamp": 5000})
    folder = hostile.tiny_agent_folder(tmp_path / "agent", tokenizer=tokenizer)
    with pytest.raises(ArtifactError, match="token id 5000"):
        EdgeAgent.load(folder)
    assert main(["agent", "predict", "turn on the lamp", "--artifacts", str(folder)]) == 1
    assert "internal error" not in capsys.readouterr().err


def test_labels_that_do_not_fit_a_model_of_dynamic_width_fail_at_load(tmp_path, capsys):
    """Defect 2: a shorter intent list made `agent predict` exit 2 with an IndexError."""
    folder = hostile.tiny_agent_folder(tmp_path / "agent", intents=hostile.INTENTS[:1], dynamic_widths=True)
    with pytest.raises(ArtifactError, match="3 classes but the task lists 1"):
        EdgeAgent.load(folder)
    assert main(["agent", "predict", "set the light to 31", "--artifacts", str(folder)]) == 1
    assert "internal error" not in capsys.readouterr().err


def test_a_reversed_intent_list_is_refused_where_the_model_carries_its_task(tmp_path, capsys):
    """Defect 2: reversing the intent list gave confident wrong tool calls, exit 0."""
    ok = hostile.tiny_agent_folder(tmp_path / "ok", exported_intents=hostile.INTENTS)
    assert EdgeAgent.load(ok, threshold=0.9).act("set the light to 50%").intent == "HassLightSet"
    _edit_record(ok, lambda r: json.dumps({**r, "task": {**r["task"], "threshold": 0.8}}))
    assert EdgeAgent.load(ok).task.threshold == 0.8  # a tuned threshold is no mismatch
    reversed_ = hostile.tiny_agent_folder(tmp_path / "reversed", intents=hostile.INTENTS[::-1],
                                          exported_intents=hostile.INTENTS)
    with pytest.raises(ArtifactError, match="other labels than the model was exported with"):
        EdgeAgent.load(reversed_)
    assert main(["agent", "predict", "set the light to 50%", "--artifacts", str(reversed_)]) == 1
    assert "internal error" not in capsys.readouterr().err


def _edit_record(folder, change):
    path = folder / AGENT_FILE
    text = path.read_text()
    path.write_text(change(json.loads(text)) if callable(change) else change)


@pytest.mark.parametrize("change, match", [
    (lambda r: json.dumps({**r, "extra": json.loads("[" * 100 + "]" * 100)}), "nests"),
    (lambda r: json.dumps(r)[:-1] + ', "x": ' + hostile.huge_int() + "}", "number"),
    (lambda r: json.dumps(r)[:-1] + ', "x": ' + hostile.deep_json() + "}", "nests"),
    (lambda r: json.dumps({**r, "tokenizer": ["tokenizer.json"]}), "tokenizer"),
    (lambda r: json.dumps({**r, "task": {**r["task"], "value_table": [1]}}), "value_table"),
    (lambda r: json.dumps({**r, "task": {**r["task"], "threshold": "high"}}), "threshold"),
    (lambda r: json.dumps({**r, "task": {**r["task"], "max_length": 10**9}}), "max_length"),
    (lambda r: json.dumps({**r, "files": {**r["files"], "../x": "0" * 64}}), "plain file name"),
])
def test_a_hostile_agent_record_is_an_artifact_error(folder, tmp_path, change, match, capsys):
    import shutil

    copy = tmp_path / "agent"
    shutil.copytree(folder, copy)
    _edit_record(copy, change)
    with pytest.raises(ArtifactError, match=match):
        EdgeAgent.load(copy)
    assert main(["agent", "predict", "turn on the light", "--artifacts", str(copy)]) == 1
    assert "internal error" not in capsys.readouterr().err


def test_a_symlinked_record_and_a_fifo_tokenizer_are_refused(folder, tmp_path):
    import shutil

    copy = tmp_path / "agent"
    shutil.copytree(folder, copy)
    outside = tmp_path / "elsewhere.json"
    os.replace(copy / AGENT_FILE, outside)
    (copy / AGENT_FILE).symlink_to(outside)
    with pytest.raises(ArtifactError, match="symlink"):
        EdgeAgent.load(copy)
    os.replace(outside, copy / AGENT_FILE)
    (copy / "tokenizer.json").unlink()
    os.mkfifo(copy / "tokenizer.json")
    with pytest.raises(ArtifactError, match="not a regular file"):
        EdgeAgent.load(copy)


def test_the_task_refuses_hostile_descriptions_with_input_errors():
    from edgeagent.errors import InputError

    for bad in ({"threshold": float("nan")}, {"language": 5}, {"max_length": True}):
        with pytest.raises(InputError):
            IntentSlotTask(hostile.INTENTS, hostile.TAGS, **bad)
