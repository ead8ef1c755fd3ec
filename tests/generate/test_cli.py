"""`edgeagent generate`: the command module, run through a parser of its own.

`cli/main.py` registers it at merge (this branch adds new files only), so the tests build the
parser from the module's `register` and map errors as `main` does.
"""

from __future__ import annotations

import argparse
import json

import pytest

from edgeagent.cli import generate as generate_cmd
from edgeagent.errors import EdgeAgentError


def run(argv):
    parser = argparse.ArgumentParser(prog="edgeagent")
    generate_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["generate", *argv])
    try:
        return args.handler(args)
    except EdgeAgentError as exc:
        return f"error: {exc}"


def test_generate_json_equals_the_api(llama, llama_ir, capsys):
    from edgeagent.generate import generate

    assert run([str(llama_ir), "turn on the lights", "--max-new-tokens", "6", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_ids"] == list(generate(llama, "turn on the lights", max_new_tokens=6).token_ids)
    assert out["stop_reason"] == "max_new_tokens" and out["timings"]["model_steps"] == 6


def test_generate_streams_text(llama, llama_ir, capsys):
    from edgeagent.generate import generate

    assert run([str(llama_ir), "hello", "--chat", "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    expected = generate(llama, [{"role": "user", "content": "hello"}], max_new_tokens=5).text
    assert captured.out == expected + "\n"
    assert "tokens/s" in captured.err


def test_generate_a_tool_call(llama_ir, tmp_path, capsys):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "start_timer", "description": "Start a timer.", "parameters": {
        "type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 60}},
        "required": ["minutes"], "additionalProperties": False}}]))
    assert run([str(llama_ir), "set a timer", "--tools", str(tools), "--temperature", "1", "--seed", "0",
                "--max-new-tokens", "40"]) == 0
    call = json.loads(capsys.readouterr().out)
    assert call["name"] == "start_timer" and 1 <= call["arguments"]["minutes"] <= 60


@pytest.mark.parametrize(("argv", "words"), [
    (["--top-p", "2"], "top_p"), (["--temperature", "-1"], "temperature"), (["--stop", ""], "stop"),
    (["--num-beams", "0"], "num_beams"),
])
def test_bad_settings_are_one_line_errors(llama_ir, argv, words):
    message = run([str(llama_ir), "hi", *argv])
    assert isinstance(message, str) and message.startswith("error: ") and words in message


def test_bad_tools_file(llama_ir, tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([{"name": "t", "parameters": {"type": "objekt"}}]))
    assert "not a valid JSON Schema" in run([str(llama_ir), "hi", "--tools", str(path)])
    path.write_text("{not json")
    assert "cannot read" in run([str(llama_ir), "hi", "--tools", str(path)])
