"""Every bad input to generation is a typed error that names the problem, raised before any step."""

from __future__ import annotations

import pytest

from edgeagent.errors import ArtifactError, EdgeAgentError, InputError, UnsupportedModel
from edgeagent.generate import (NoChatTemplate, PromptTooLong, Tool, call_tool, generate, load_decoder,
                                stream)

MESSAGES = [{"role": "user", "content": "hi"}]


def test_prompt_over_the_length_names_both_lengths(llama):
    prompt = " ".join(["kitchen"] * 3000)
    n = len(llama.assets.encode(prompt))
    with pytest.raises(PromptTooLong) as caught:
        generate(llama, prompt, max_new_tokens=4)
    error = caught.value
    assert isinstance(error, InputError) and error.field == "prompt"
    assert (error.prompt_tokens, error.max_length) == (n, llama.max_length)
    assert str(n) in str(error) and str(llama.max_length) in str(error)
    with pytest.raises(PromptTooLong, match="prompt 1 of the batch"):
        generate(llama, ["short", prompt], max_new_tokens=4)
    with pytest.raises(PromptTooLong):
        generate(llama, prompt, max_new_tokens=4, num_beams=2)
    with pytest.raises(PromptTooLong):
        stream(llama, prompt, max_new_tokens=4)


def test_messages_without_a_chat_template(no_template_ir):
    with load_decoder(no_template_ir) as decoder:
        assert decoder.assets.chat_template is None
        with pytest.raises(NoChatTemplate) as caught:
            generate(decoder, MESSAGES, max_new_tokens=4)
        assert isinstance(caught.value, InputError) and "chat template" in str(caught.value)
        assert generate(decoder, "plain prompts still work", max_new_tokens=2).token_ids


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"top_p": 1.01}, "top_p"), ({"top_p": 0}, "top_p"), ({"temperature": -1.0}, "temperature"),
    ({"stop": ""}, "stop"), ({"stop": ["\n", ""]}, "stop"), ({"num_beams": 0}, "num_beams"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"top_k": -3}, "top_k"),
])
def test_bad_settings_through_generate_and_stream(llama, kwargs, field):
    settings = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(InputError) as caught:
        generate(llama, "hi", **settings)
    assert caught.value.field == field
    if "num_beams" not in kwargs:
        with pytest.raises(InputError):
            stream(llama, "hi", **settings)


@pytest.mark.parametrize(("prompt", "words"), [
    ([], "non-empty"), ("", "empty after tokenization"), (42, "string"),
    ([{"content": "no role"}], "role"), (["ok", 3], "prompt 1"),
    ([{"role": "user", "content": object()}], "plain JSON"),
])
def test_bad_prompts(llama, prompt, words):
    with pytest.raises(InputError, match=words):
        generate(llama, prompt, max_new_tokens=2)


def test_a_session_needs_its_assets_and_must_be_a_decoder(llama, llama_ir, mlp_path):
    with pytest.raises(InputError, match="assets="):
        generate(llama.session, "hi", max_new_tokens=2)
    assert generate(llama.session, "hi", max_new_tokens=2, assets=llama_ir).token_ids
    assert generate(llama.session, "hi", max_new_tokens=2, assets=llama_ir).token_ids  # still open
    with pytest.raises(UnsupportedModel, match="not a decoder"):
        load_decoder(mlp_path, assets=llama_ir)


def test_missing_or_broken_assets(tmp_path, llama_ir):
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        load_decoder(tmp_path)
    with pytest.raises(ArtifactError, match="neither"):
        load_decoder(tmp_path / "absent")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="tokenizers"):
        load_decoder(llama_ir / "model.onnx", assets=tmp_path)
    with pytest.raises(InputError, match="Decoder, Session, Artifact or folder"):
        generate(3.5, "hi", max_new_tokens=2)


def test_tool_misuse(llama):
    tool = Tool("get_time")
    with pytest.raises(InputError, match="chat template"):
        generate(llama, "a string prompt", max_new_tokens=2, tools=[tool])
    with pytest.raises(InputError, match="one prompt"):
        call_tool(llama, ["a", "batch"], [tool])
    with pytest.raises(InputError, match="ToolRegistry|Tool objects|at least one"):
        call_tool(llama, MESSAGES, [])


def test_a_stream_is_read_before_its_result(llama):
    chunks = stream(llama, "hi", max_new_tokens=3)
    with pytest.raises(InputError, match="iterate"):
        chunks.result
    list(chunks)
    assert len(chunks.result.token_ids) == 3
    with pytest.raises(InputError, match="results"):
        stream(llama, ["a", "b"], max_new_tokens=1).result


def test_errors_are_edgeagent_errors():
    for cls in (PromptTooLong, NoChatTemplate):
        assert issubclass(cls, EdgeAgentError)
