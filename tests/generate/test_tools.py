"""Tools, their grammar, and constrained tool calls that always parse (llguidance, no mocks)."""

from __future__ import annotations

import json

import pytest

from edgeagent.errors import InputError
from edgeagent.generate import (Grammar, StopReason, Tool, ToolRegistry, ToolSchemaError, call_tool,
                                generate, stream)

pytest.importorskip("llguidance")

SET_LIGHT = Tool("set_light", "Turn a light on or off, or dim it.", {
    "type": "object",
    "properties": {
        "room": {"type": "string", "enum": ["kitchen", "bedroom", "living room", "office"]},
        "state": {"type": "string", "enum": ["on", "off"]},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["room", "state"], "additionalProperties": False})
START_TIMER = Tool("start_timer", "Start a timer.", {
    "type": "object",
    "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 600},
                   "label": {"type": "string", "maxLength": 12}},
    "required": ["minutes"], "additionalProperties": False})
GET_TIME = Tool("get_time", "The current time.")
TOOLS = ToolRegistry([SET_LIGHT, START_TIMER, GET_TIME])
ASK = [{"role": "user", "content": "dim the kitchen lights to 30 percent"}]


# -- declarations -------------------------------------------------------------------------------


@pytest.mark.parametrize(("parameters", "words"), [
    ({"type": "objekt"}, "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": "zero"}}},
     "properties/a/minimum"),
    ({"type": "object", "required": "a"}, "not a valid JSON Schema"),
    ({"type": "array", "items": {"type": "string"}}, 'type "object"'),
    ({"properties": {}}, 'type "object"'),
    ({"type": "object", "default": {1, 2}}, "not JSON data"),
    ("not a dict", "a dict"),
])
def test_invalid_parameter_schemas_are_typed_errors(parameters, words):
    with pytest.raises(ToolSchemaError) as caught:
        Tool("t", "d", parameters)
    assert isinstance(caught.value, InputError) and caught.value.tool == "t"
    assert words in str(caught.value)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "x" * 65, None])
def test_bad_tool_names(name):
    with pytest.raises(ToolSchemaError):
        Tool(name)


def test_registry_rules():
    with pytest.raises(ToolSchemaError, match="at least one"):
        ToolRegistry([])
    with pytest.raises(ToolSchemaError, match="more than once"):
        ToolRegistry([GET_TIME, Tool("get_time")])
    with pytest.raises(ToolSchemaError, match="Tool objects"):
        ToolRegistry([{"name": "x"}])
    with pytest.raises(InputError, match="no tool named"):
        TOOLS["nope"]
    assert TOOLS.names == ["set_light", "start_timer", "get_time"] and TOOLS["get_time"] is GET_TIME


def test_tool_is_frozen_against_its_caller():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tool = Tool("t", parameters=schema)
    schema["properties"]["a"]["type"] = "string"
    assert tool.schema()["properties"]["a"]["type"] == "integer"
    with pytest.raises(TypeError):
        tool.parameters["type"] = "array"


def test_call_schema_is_a_valid_schema_that_accepts_exactly_the_calls():
    from jsonschema import Draft202012Validator

    schema = TOOLS.call_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"name": "get_time", "arguments": {}})
    assert validator.is_valid({"name": "set_light", "arguments": {"room": "kitchen", "state": "on"}})
    assert not validator.is_valid({"name": "set_light", "arguments": {"room": "garage", "state": "on"}})
    assert not validator.is_valid({"name": "get_time", "arguments": {}, "extra": 1})
    assert not validator.is_valid({"name": "set_time", "arguments": {}})


def test_parse():
    call, why = TOOLS.parse('{"name": "start_timer", "arguments": {"minutes": 5}}')
    assert why == "" and call.name == "start_timer" and call.to_json()["arguments"] == {"minutes": 5}
    assert TOOLS.parse('{"name": "start_timer", "arguments": {"minutes": 0}}')[0] is None
    assert TOOLS.parse('{"name": "start_timer", "arguments": {"minutes": 5}')[0] is None
    assert "unknown tool" in TOOLS.parse('{"name": "x", "arguments": {}}')[1]


def test_a_schema_llguidance_cannot_enforce_names_the_tool():
    weird = Tool("weird", parameters={"type": "object", "properties": {
        "x": {"type": "string", "pattern": "(?<=a)b"}}, "required": ["x"]})  # look-behind
    with pytest.raises(ToolSchemaError) as caught:
        ToolRegistry([GET_TIME, weird]).grammar()
    assert caught.value.tool == "weird"


def test_declarations_reach_the_chat_template(llama_tools):
    prompt = llama_tools.assets.render_chat(ASK, tools=TOOLS.declarations())
    for tool in TOOLS.tools:
        assert json.dumps(tool.declaration(), ensure_ascii=False) in prompt


def test_a_padded_vocabulary_is_masked_out(llama):
    """Models pad their logits past the tokenizer (to a multiple of 64, say): never sampled."""
    import numpy as np

    from edgeagent.generate.grammar import Constraint, ll_tokenizer

    tokens = llama.assets.tokenizer.get_vocab_size(with_added_tokens=True)
    constraint = Constraint(Grammar.regex("[a-z]+"), ll_tokenizer(llama.assets, tokens + 16), tokens + 16)
    scores = np.zeros(tokens + 16, np.float32)
    scores[tokens:] = 100.0
    constraint.apply(scores)
    assert np.isneginf(scores[tokens:]).all() and np.isfinite(scores[:tokens]).sum() > 10
    with pytest.raises(InputError, match="does not belong"):
        ll_tokenizer(llama.assets, tokens - 1)


# -- constrained generation ---------------------------------------------------------------------


def test_200_sampled_calls_at_temperature_1_all_parse_and_validate(llama):
    names = set()
    for seed in range(200):
        result = call_tool(llama, ASK, TOOLS, max_new_tokens=96, temperature=1.0, seed=seed)
        assert result.complete, (seed, result.reason, result.generation.text)
        assert result.reason == "grammar_complete"
        parsed = json.loads(result.generation.text)
        assert parsed == result.call.to_json()
        assert TOOLS[result.call.name].errors(parsed["arguments"]) == []
        names.add(result.call.name)
    assert names == set(TOOLS.names)  # the grammar constrains, it does not pick


def test_calls_on_another_family_parse_too(qwen):
    for seed in range(40):
        result = call_tool(qwen, ASK, TOOLS, max_new_tokens=96, temperature=1.0, seed=seed)
        assert result.complete, result.reason
        assert TOOLS[result.call.name].errors(result.call.to_json()["arguments"]) == []


def test_constant_keys_are_fast_forwarded(llama):
    result = call_tool(llama, ASK, TOOLS, temperature=0.0).generation
    t = result.timings
    assert result.stop_reason is StopReason.GRAMMAR_COMPLETE
    assert t.fast_forward_tokens > 0 and t.steps_saved > 0
    # Each model call after the prefill feeds one sampled token plus the tokens it forced.
    assert t.model_steps == len(result.token_ids) - t.steps_saved
    assert t.model_steps < len(result.token_ids)
    assert result.text.startswith('{"name": "')
    assert t.prefill_tokens > result.prompt_tokens  # the forced prefix rode on the prefill
    assert t.mask_seconds > 0


def test_fast_forwarded_cache_matches_a_plain_run(llama):
    """A constrained sampled run, replayed one model step per token, draws the same tokens.

    The loop feeds forced tokens to the model in multi-token steps. Replaying its tokens one
    step each, with a fresh Generator of the same seed, must reproduce every sampled token: a
    cache built wrong for the fast-forwarded tokens would change the logits and the draws.
    """
    import numpy as np

    from edgeagent.generate import GenerationOptions
    from edgeagent.generate.grammar import Constraint
    from edgeagent.generate.options import choose, row_generator

    prompt = llama.assets.encode(llama.assets.render_chat(ASK, tools=TOOLS.declarations()),
                                 add_special_tokens=False)
    options = GenerationOptions(max_new_tokens=96, temperature=1.0)
    replayed = 0
    for seed in range(6):
        result = call_tool(llama, ASK, TOOLS, max_new_tokens=96, temperature=1.0, seed=seed).generation
        rng = row_generator(seed, 0)
        constraint = Constraint(TOOLS.grammar(), llama.ll_tokenizer(), llama.vocab_size())
        cache = llama.new_cache(1)
        logits = cache.step(np.array([prompt]))[0, -1]
        sampled = 0
        for token in result.token_ids:
            forced = list(constraint.matcher.compute_ff_tokens())
            if forced:
                assert forced[0] == token
                assert constraint.matcher.consume_token(token)
            else:
                scores = np.array(logits, np.float32)
                constraint.apply(scores)
                assert choose(scores, options, rng) == token
                constraint.consume(token)
                sampled += 1
            logits = cache.step(np.array([[token]]))[0, -1]
        assert constraint.stopped and sampled == len(result.token_ids) - result.timings.fast_forward_tokens
        replayed += sampled
    assert replayed >= 10


def test_budget_inside_an_unfinished_call_returns_no_call(llama):
    result = call_tool(llama, ASK, TOOLS, max_new_tokens=9, temperature=1.0, seed=0)
    assert not result.complete and result.call is None
    assert result.reason.startswith("max_new_tokens")
    assert result.generation.stop_reason is StopReason.MAX_NEW_TOKENS
    assert len(result.generation.token_ids) == 9


def test_streaming_a_constrained_generation(llama):
    grammar = TOOLS.grammar()
    expected = generate(llama, ASK, max_new_tokens=96, temperature=1.0, seed=4, grammar=grammar)
    chunks = list(stream(llama, ASK, max_new_tokens=96, temperature=1.0, seed=4, grammar=grammar))
    assert "".join(c.text for c in chunks) == expected.text
    assert sum(c.fast_forwarded for c in chunks) == expected.timings.fast_forward_tokens
    assert chunks[0].fast_forwarded == len(chunks[0].token_ids) > 0  # the forced prefix comes first


def test_a_batch_of_constrained_generations(llama):
    prompts = [ASK, [{"role": "user", "content": "set a timer for 5 minutes"}],
               [{"role": "user", "content": "what time is it"}]]
    together = generate(llama, prompts, max_new_tokens=96, grammar=TOOLS)
    for prompt, result in zip(prompts, together):
        alone = generate(llama, prompt, max_new_tokens=96, grammar=TOOLS)
        assert result.token_ids == alone.token_ids
        assert TOOLS.parse(result.text)[0] is not None


def test_other_grammars(llama):
    digits = generate(llama, "count:", max_new_tokens=12, temperature=1.0, seed=0,
                      grammar=Grammar.regex(r"[0-9]{3}-[0-9]{2}"))
    assert digits.stop_reason is StopReason.GRAMMAR_COMPLETE
    import re

    assert re.fullmatch(r"[0-9]{3}-[0-9]{2}", digits.text)
    yes_no = generate(llama, "answer:", max_new_tokens=8, grammar=Grammar.lark('start: "yes" | "no"'))
    assert yes_no.text in ("yes", "no")
    exact = generate(llama, "say:", max_new_tokens=16, grammar=Grammar.lark('start: "turn on the tv"'))
    assert exact.text == "turn on the tv" and exact.stop_reason is StopReason.GRAMMAR_COMPLETE
    # Everything is forced: no model call at all.
    assert exact.timings.model_steps == 0 and exact.timings.prefill_tokens == 0
    assert exact.timings.fast_forward_tokens == exact.timings.steps_saved == len(exact.token_ids)


def test_grammar_errors_are_typed(llama):
    with pytest.raises(InputError, match="grammar"):
        generate(llama, "x", max_new_tokens=4, grammar=Grammar.lark("start: undefined_rule"))
    with pytest.raises(InputError, match="beam"):
        generate(llama, "x", max_new_tokens=4, grammar=TOOLS, num_beams=2)
    with pytest.raises(InputError, match="Grammar or a ToolRegistry"):
        generate(llama, "x", max_new_tokens=4, grammar="start: 'a'")
