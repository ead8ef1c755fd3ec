"""`edgeagent generate`, through the parser of `edgeagent`'s own `main` (errors: one line, exit 1)."""

from __future__ import annotations

import json
import sys

import pytest

from edgeagent.cli.main import main


def run(argv, capsys=None):
    """`edgeagent generate ARGV`: the exit code, or for a failure the one-line error it printed."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["generate", *argv])
    if code == 1:
        return err.getvalue().strip()
    sys.stderr.write(err.getvalue())
    return code


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
    message = run([str(llama_ir), "hi", "--tools", str(path)])
    assert message.startswith("error: --tools") and "JSON" in message
    assert run([str(llama_ir), "hi", "--tools", str(tmp_path / "missing.json")]).startswith("error: --tools")


def test_generate_runs_a_compiled_artifact_on_a_device_by_name(llama, llama_ir, tmp_path, capsys):
    import edgeagent
    from edgeagent.generate import generate

    artifact = edgeagent.compile(llama_ir, "onnxruntime", "int4", out=tmp_path / "int4")
    assert run([str(artifact.path), "turn on the lights", "--max-new-tokens", "4", "--device", "cpu",
                "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["token_ids"]) == 4
    assert run([str(artifact.path), "hi", "--device", "gpu"]).startswith("error: ")  # no GPU provider here
