"""The generation loop on tiny random decoders, checked against transformers on the same weights.

The IR folders come from `edgeagent.export_causal_lm` (conftest); the loop runs
them through ONNX Runtime via `Session.run`. Greedy, beams and left padding are compared token
for token with transformers' own `generate`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeagent.generate import StopReason, generate, load_decoder, stream

PROMPTS = ["turn on the kitchen lights", "what time is it", "add milk to the shopping list please",
           "Hello!"]
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "dim the living room lights to 30 percent"}]


def hf_greedy(torch_model, ids, new, **kwargs):
    import torch

    with torch.inference_mode():
        out = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=new, do_sample=False, pad_token_id=0, **kwargs)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_equals_transformers_generate(family, request):
    decoder = request.getfixturevalue("llama" if family == "llama" else "qwen")
    torch_model = request.getfixturevalue("llama_torch" if family == "llama" else "qwen_torch")
    for prompt in [*PROMPTS, CHAT]:
        result = generate(decoder, prompt, max_new_tokens=24)
        ids = (decoder.assets.encode(prompt) if isinstance(prompt, str)
               else decoder.assets.encode(decoder.assets.render_chat(prompt), add_special_tokens=False))
        expected = hf_greedy(torch_model, ids, 24, eos_token_id=2)
        assert list(result.token_ids) == expected, prompt
        assert result.prompt_tokens == len(ids)


def test_chat_prompt_is_transformers_apply_chat_template(llama, llama_tools, llama_hf):
    from transformers import AutoTokenizer

    from tests.generate.ir_variants import TOOLS_CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(llama_hf)
    tools = [{"type": "function", "function": {"name": "get_time", "description": "the time <now>",
                                               "parameters": {"type": "object", "properties": {}}}}]
    cases = [(llama, None, {}), (llama_tools, TOOLS_CHAT_TEMPLATE, {}),
             (llama_tools, TOOLS_CHAT_TEMPLATE, {"tools": tools})]
    for decoder, template, kwargs in cases:
        expected = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False,
                                           chat_template=template, **kwargs)
        assert decoder.assets.render_chat(CHAT, **kwargs) == expected
        ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True,
                                      chat_template=template, **kwargs)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert decoder.assets.encode(decoder.assets.render_chat(CHAT, **kwargs),
                                     add_special_tokens=False) == list(ids)
    assert "<now>" in llama_tools.assets.render_chat(CHAT, tools=tools)  # tojson escapes no HTML
    assert llama_tools.assets.chat_template_renders_tools
    assert not llama.assets.chat_template_renders_tools


def test_text_is_the_decoded_tokens_and_timings_add_up(llama):
    result = generate(llama, PROMPTS[0], max_new_tokens=16)
    assert result.stop_reason is StopReason.MAX_NEW_TOKENS and not result.complete
    assert len(result.token_ids) == 16
    assert result.text == llama.assets.decode(result.token_ids)
    t = result.timings
    assert t.prefill_tokens == result.prompt_tokens and t.decode_tokens == 15
    assert t.model_steps == 16 and t.fast_forward_tokens == 0 and t.steps_saved == 0
    assert 0 < t.prefill_seconds <= t.time_to_first_token_seconds <= t.total_seconds
    assert t.decode_seconds > 0 and t.decode_tokens_per_second > 0
    assert result.to_json()["timings"]["model_steps"] == 16


def test_eos_stops_and_is_returned_like_transformers(llama, llama_torch):
    ids = llama.assets.encode(PROMPTS[1])
    free = generate(llama, PROMPTS[1], max_new_tokens=12).token_ids
    eos = free[4]  # make the 5th greedy token the end of sequence
    assets = dataclasses.replace(llama.assets, eos_token_ids=(eos,))
    from edgeagent.generate import Decoder

    decoder = Decoder(llama.session, assets)
    result = generate(decoder, PROMPTS[1], max_new_tokens=12)
    cut = free.index(eos)
    assert result.token_ids == free[:cut + 1]
    assert result.stop_reason is StopReason.EOS and result.complete
    assert list(result.token_ids) == hf_greedy(llama_torch, ids, 12, eos_token_id=eos)


def test_sampling_is_reproducible_with_a_seed(llama):
    a = generate(llama, CHAT, max_new_tokens=20, temperature=1.0, seed=11)
    b = generate(llama, CHAT, max_new_tokens=20, temperature=1.0, seed=11)
    c = generate(llama, CHAT, max_new_tokens=20, temperature=1.0, seed=12)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != c.token_ids
    greedy = generate(llama, CHAT, max_new_tokens=20)
    assert a.token_ids != greedy.token_ids


def test_top_k_1_is_greedy(llama, qwen):
    for decoder in (llama, qwen):
        greedy = generate(decoder, PROMPTS[2], max_new_tokens=20)
        for seed in (0, 1):
            sampled = generate(decoder, PROMPTS[2], max_new_tokens=20, temperature=1.5, top_k=1, seed=seed)
            assert sampled.token_ids == greedy.token_ids


def test_tiny_top_p_is_greedy(llama):
    greedy = generate(llama, PROMPTS[0], max_new_tokens=12)
    assert generate(llama, PROMPTS[0], max_new_tokens=12, temperature=1.0, top_p=1e-6,
                    seed=5).token_ids == greedy.token_ids


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_batch_with_left_padding_equals_one_by_one(family, request):
    decoder = request.getfixturevalue("llama" if family == "llama" else "qwen")
    batch = [*PROMPTS, CHAT]
    together = generate(decoder, batch, max_new_tokens=16)
    assert isinstance(together, list) and len(together) == len(batch)
    for prompt, result in zip(batch, together):
        alone = generate(decoder, prompt, max_new_tokens=16)
        assert result.token_ids == alone.token_ids
        assert result.text == alone.text
        assert result.prompt_tokens == alone.prompt_tokens


def test_sampled_rows_do_not_depend_on_their_batch_mates(llama):
    alone = generate(llama, PROMPTS[0], max_new_tokens=12, temperature=1.0, seed=9)
    for batch in ([PROMPTS[0], PROMPTS[1]], [PROMPTS[0], CHAT, PROMPTS[3]]):
        together = generate(llama, batch, max_new_tokens=12, temperature=1.0, seed=9)
        assert together[0].token_ids == alone.token_ids
    again = generate(llama, [PROMPTS[0], PROMPTS[1]], max_new_tokens=12, temperature=1.0, seed=9)
    assert again[1].token_ids == generate(llama, [PROMPTS[0], PROMPTS[1]], max_new_tokens=12,
                                          temperature=1.0, seed=9)[1].token_ids
    assert together[1].token_ids != generate(llama, CHAT, max_new_tokens=12, temperature=1.0,
                                             seed=9).token_ids  # row 1 has its own stream


def test_batch_rows_that_stop_early_leave_the_batch(llama):
    free = [generate(llama, p, max_new_tokens=10).token_ids for p in PROMPTS[:3]]
    assets = dataclasses.replace(llama.assets, eos_token_ids=(free[0][2],))
    from edgeagent.generate import Decoder

    decoder = Decoder(llama.session, assets)
    together = generate(decoder, PROMPTS[:3], max_new_tokens=10)
    for prompt, result in zip(PROMPTS[:3], together):
        assert result.token_ids == generate(decoder, prompt, max_new_tokens=10).token_ids
    assert together[0].stop_reason is StopReason.EOS and len(together[0].token_ids) <= 3


def test_stop_string_cuts_the_text(llama):
    free = generate(llama, PROMPTS[0], max_new_tokens=30)
    text = free.text
    # A stop string from the middle of the free text: generation ends where it first appears.
    stop = next(text[i:i + 2] for i in range(4, len(text) - 2) if text[i:i + 2].isprintable())
    cut = text.find(stop)
    result = generate(llama, PROMPTS[0], max_new_tokens=30, stop=[stop, "never-appears"])
    assert result.stop_reason is StopReason.STOP_STRING and result.complete
    assert result.text == text[:cut]
    assert len(result.token_ids) < len(free.token_ids)
    assert free.token_ids[:len(result.token_ids)] == result.token_ids
    assert stop in llama.assets.decode(result.token_ids)
    assert stop not in llama.assets.decode(result.token_ids[:-1])


@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.9, "seed": 3},
                                    {"temperature": 1.0, "top_p": 0.8, "seed": 1, "stop": "e"}])
def test_streaming_yields_the_same_text(llama, kwargs):
    expected = generate(llama, CHAT, max_new_tokens=24, **kwargs)
    chunks = stream(llama, CHAT, max_new_tokens=24, **kwargs)
    pieces = list(chunks)
    assert "".join(c.text for c in pieces) == expected.text
    assert tuple(t for c in pieces for t in c.token_ids) == expected.token_ids
    assert chunks.result.token_ids == expected.token_ids and chunks.result.text == expected.text
    assert pieces[-1].stop_reason is expected.stop_reason
    assert all(c.stop_reason is None for c in pieces[:-1])


def test_streaming_a_batch(llama):
    expected = generate(llama, PROMPTS[:3], max_new_tokens=8)
    chunks = stream(llama, PROMPTS[:3], max_new_tokens=8)
    texts = ["", "", ""]
    for chunk in chunks:
        texts[chunk.index] += chunk.text
    assert texts == [r.text for r in expected]
    assert [r.token_ids for r in chunks.results] == [r.token_ids for r in expected]


def test_streaming_holds_back_a_possible_stop_string(llama):
    free = generate(llama, PROMPTS[3], max_new_tokens=20).text
    stop = free[6:9] + "\x00"  # begins like the text, never completes: held back, then released
    pieces = [c.text for c in stream(llama, PROMPTS[3], max_new_tokens=20, stop=stop)]
    assert "".join(pieces) == free


def hf_beams(torch_model, ids, new, beams):
    """transformers' beam search: every final beam (best first) and its length-normalised score."""
    import torch

    with torch.inference_mode():
        out = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=new, do_sample=False, num_beams=beams,
                                   num_return_sequences=beams, early_stopping=False, length_penalty=1.0,
                                   pad_token_id=0, eos_token_id=2, return_dict_in_generate=True,
                                   output_scores=True)
    return ([row[len(ids):].tolist() for row in out.sequences],
            [float(s) for s in out.sequences_scores])


def sequence_logprob(torch_model, ids, continuation):
    import torch

    with torch.inference_mode():
        logits = torch_model(torch.tensor([ids + list(continuation)])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(ids) - 1 + i, t] for i, t in enumerate(continuation)))


def test_one_beam_is_greedy(llama):
    for prompt in PROMPTS[:2]:
        assert (generate(llama, prompt, max_new_tokens=12, num_beams=1).token_ids
                == generate(llama, prompt, max_new_tokens=12).token_ids)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_beam_search_returns_the_best_beam_as_transformers(family, request):
    decoder = request.getfixturevalue("llama" if family == "llama" else "qwen")
    torch_model = request.getfixturevalue("llama_torch" if family == "llama" else "qwen_torch")
    differs = 0
    for prompt in PROMPTS[:3]:
        ids = decoder.assets.encode(prompt)
        result = generate(decoder, prompt, max_new_tokens=10, num_beams=4)
        beams, scores = hf_beams(torch_model, ids, 10, 4)
        assert list(result.token_ids) == beams[0], prompt
        assert result.score == pytest.approx(scores[0], abs=1e-3)
        assert result.score >= max(scores) - 1e-3  # the highest-scoring of the final beams
        # The score is the sequence's own log-probability over its length (length_penalty 1).
        logp = sequence_logprob(torch_model, ids, result.token_ids)
        assert result.score == pytest.approx(logp / len(result.token_ids), abs=1e-3)
        differs += result.token_ids != generate(decoder, prompt, max_new_tokens=10).token_ids
    assert differs >= 1  # the search is not greedy in disguise


def test_beam_search_with_eos_equals_transformers(llama, llama_torch):
    # An eos that the beams meet early: finished hypotheses compete with running ones.
    ids = llama.assets.encode(PROMPTS[0])
    free = generate(llama, PROMPTS[0], max_new_tokens=10, num_beams=3).token_ids
    from edgeagent.generate import Decoder

    decoder = Decoder(llama.session, dataclasses.replace(llama.assets, eos_token_ids=(free[3],)))
    result = generate(decoder, PROMPTS[0], max_new_tokens=10, num_beams=3)
    import torch

    with torch.inference_mode():
        out = llama_torch.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, num_beams=3,
                                   attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   pad_token_id=0, eos_token_id=free[3])
    assert list(result.token_ids) == out[0, len(ids):].tolist()
    assert result.stop_reason is StopReason.EOS and result.token_ids[-1] == free[3]


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_every_backend_shares_the_loop(backend, llama, llama_ir, tmp_path):
    import edgeagent
    from edgeagent.backend import backend_entries

    entry = backend_entries().get(backend)
    if entry is None or entry.backend is None or not entry.backend.available():
        pytest.skip(f"{backend} is not available here")
    expected = generate(llama, CHAT, max_new_tokens=12).token_ids
    artifact = edgeagent.compile(llama_ir / "model.onnx", backend, "fp32", out=tmp_path / backend)
    with load_decoder(artifact, assets=llama_ir) as decoder:
        assert generate(decoder, CHAT, max_new_tokens=12).token_ids == expected
        assert generate(decoder, [PROMPTS[0], CHAT], max_new_tokens=6)[1].token_ids == expected[:6]
    assert generate(tmp_path / backend, CHAT, max_new_tokens=12, assets=llama_ir).token_ids == expected


def test_generate_opens_an_ir_folder(llama_ir, llama):
    assert (generate(llama_ir, PROMPTS[0], max_new_tokens=6).token_ids
            == generate(llama, PROMPTS[0], max_new_tokens=6).token_ids)


def test_max_length_ends_generation(llama):
    limit = llama.max_length
    long_prompt = " ".join(["lights"] * 400)
    ids = llama.assets.encode(long_prompt)[:limit - 3]
    prompt = llama.assets.tokenizer.decode(ids)
    n = len(llama.assets.encode(prompt))
    assert n < limit
    result = generate(llama, prompt, max_new_tokens=50)
    assert result.stop_reason is StopReason.MAX_LENGTH
    assert n + len(result.token_ids) == limit


def test_kv_cache_multi_token_steps_equal_single_steps(llama, llama_torch):
    """What fast-forwarding relies on: k tokens in one step build the same cache as k steps."""
    import torch

    ids = llama.assets.encode(PROMPTS[2])
    extra = [40, 41, 42, 43, 44]
    one = llama.new_cache(1)
    one.step(np.array([ids]))
    singles = [one.step(np.array([[t]]))[0, -1] for t in extra]
    many = llama.new_cache(1)
    many.step(np.array([ids]))
    multi = many.step(np.array([extra]))[0]
    np.testing.assert_allclose(multi, np.stack(singles), atol=1e-4)
    after_one = one.step(np.array([[7]]))[0, -1]
    after_many = many.step(np.array([[7]]))[0, -1]
    np.testing.assert_allclose(after_one, after_many, atol=1e-4)
    with torch.inference_mode():
        reference = llama_torch(torch.tensor([ids + extra + [7]])).logits[0, -1].numpy()
    np.testing.assert_allclose(after_many, reference, atol=1e-4)
    assert many.steps == 3 and one.steps == 7 and many.length == len(ids) + 6


def test_kv_cache_rows_advance_by_different_counts(llama):
    """Padding inside a step (valid=False) is never attended to: rows match their solo runs."""
    a, b = llama.assets.encode(PROMPTS[0]), llama.assets.encode(PROMPTS[1])
    width = max(len(a), len(b))
    tokens = np.zeros((2, width), np.int64)
    valid = np.zeros((2, width), bool)
    for row, ids in enumerate((a, b)):
        tokens[row, width - len(ids):] = ids
        valid[row, width - len(ids):] = True
    cache = llama.new_cache(2)
    cache.step(tokens, valid)
    cache.step(np.array([[50, 51, 52], [60, 0, 0]]), np.array([[1, 1, 1], [1, 0, 0]], bool))
    both = cache.step(np.array([[9], [9]]))[:, -1]
    for row, (ids, extra) in enumerate(((a, [50, 51, 52]), (b, [60]))):
        solo = llama.new_cache(1)
        solo.step(np.array([ids + extra]))
        np.testing.assert_allclose(both[row], solo.step(np.array([[9]]))[0, -1], atol=1e-4)


def test_edgeagent_generate_is_callable_as_the_issue_spells_it(llama):
    import edgeagent.generate

    assert (edgeagent.generate(llama, PROMPTS[0], max_new_tokens=4).token_ids
            == generate(llama, PROMPTS[0], max_new_tokens=4).token_ids)


def test_edgeagent_generate_without_importing_the_subpackage(llama):
    import importlib

    edgeagent = importlib.import_module("edgeagent")
    assert callable(edgeagent.generate) and "generate" in edgeagent.__all__
    assert edgeagent.generate(llama, PROMPTS[0], max_new_tokens=3).token_ids == \
        generate(llama, PROMPTS[0], max_new_tokens=3).token_ids


def test_min_new_tokens_masks_eos_like_transformers(llama, llama_torch):
    free = generate(llama, PROMPTS[1], max_new_tokens=12).token_ids
    eos = free[2]  # the 3rd greedy token becomes the end of sequence
    assets = dataclasses.replace(llama.assets, eos_token_ids=(eos,))
    from edgeagent.generate import Decoder

    decoder = Decoder(llama.session, assets)
    assert generate(decoder, PROMPTS[1], max_new_tokens=12).stop_reason is StopReason.EOS
    held = generate(decoder, PROMPTS[1], max_new_tokens=12, min_new_tokens=8)
    assert len(held.token_ids) >= 8 and eos not in held.token_ids[:8]
    ids = llama.assets.encode(PROMPTS[1])
    assert list(held.token_ids) == hf_greedy(llama_torch, ids, 12, eos_token_id=eos, min_new_tokens=8)


def test_token_ids_are_a_prompt_as_given(llama):
    ids = llama.assets.encode(PROMPTS[0])
    by_text = generate(llama, PROMPTS[0], max_new_tokens=5)
    assert generate(llama, ids, max_new_tokens=5).token_ids == by_text.token_ids
    assert generate(llama, np.asarray(ids), max_new_tokens=5).token_ids == by_text.token_ids
    batch = generate(llama, [ids, ids[:3]], max_new_tokens=5)
    assert batch[0].token_ids == by_text.token_ids and batch[1].prompt_tokens == 3


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens"),
    ({"min_new_tokens": 2, "max_new_tokens": 4, "num_beams": 2}, "min_new_tokens"),
])
def test_min_new_tokens_out_of_range(llama, kwargs, field):
    from edgeagent.errors import InputError

    with pytest.raises(InputError) as info:
        generate(llama, PROMPTS[0], **kwargs)
    assert info.value.field == field


def test_token_ids_outside_the_vocabulary_are_refused(llama):
    from edgeagent.errors import InputError

    with pytest.raises(InputError, match="outside the vocabulary"):
        generate(llama, [1, 2, 10**6], max_new_tokens=2)
