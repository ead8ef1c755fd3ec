"""Decoder IRs compiled by the CPU backends: fp32 as exported, weight-only int8 and int4.

The tiny Llama (GQA, tied embeddings) goes through `edgeagent.compile` on ONNX Runtime and
OpenVINO; each artifact must load as a decoder, carry the tokenizer, and generate. fp32
artifacts must give exactly the IR's greedy tokens (same graph, or the same graph made
stateful); weight-only artifacts must produce well-formed output and record what they did.
"""

from __future__ import annotations

import pytest

import edgeagent
from edgeagent.errors import UnsupportedPrecision

PROMPTS = ["turn on the kitchen lights", "set a timer for 3 minutes"]
NEW_TOKENS = 12


def _greedy(model) -> list[tuple[int, ...]]:
    from edgeagent.generate import generate

    results = generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, add_generation_prompt=False)
    return [r.token_ids for r in results]


@pytest.fixture(scope="module")
def ir_tokens(llama_ir):
    return _greedy(llama_ir.path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp32_decoder_artifact_generates_what_the_ir_does(backend, llama_ir, ir_tokens, tmp_path):
    from edgeagent.generate import load_decoder

    artifact = edgeagent.compile(llama_ir.path, backend, "fp32", out=tmp_path / "a")
    assert artifact.capabilities["decoder"] is True
    assert "tokenizer.json" in artifact.recipe["assets"]
    with load_decoder(artifact.path) as decoder:
        assert _greedy(decoder) == ir_tokens
        # Beams reorder the cache (select): the backend's cache must follow.
        from edgeagent.generate import generate

        beams = generate(decoder, PROMPTS[0], max_new_tokens=6, num_beams=3, add_generation_prompt=False)
    with load_decoder(llama_ir.path) as reference:
        expected = generate(reference, PROMPTS[0], max_new_tokens=6, num_beams=3, add_generation_prompt=False)
    assert beams.token_ids == expected.token_ids


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_weight_only_decoder_artifacts(backend, precision, llama_ir, ir_tokens, tmp_path):
    from edgeagent.generate import load_decoder

    artifact = edgeagent.compile(llama_ir.path, backend, precision, out=tmp_path / "a")
    assert artifact.precision == precision
    assert artifact.recipe["name"] == "weight-only"
    assert artifact.recipe["activations"] == "float32"
    with load_decoder(artifact.path) as decoder:
        tokens = _greedy(decoder)
    assert [len(t) for t in tokens] == [NEW_TOKENS] * len(PROMPTS)
    assert all(0 <= t < 384 for row in tokens for t in row)
    if precision == "int8":
        # 8-bit weights on a random model: most greedy tokens survive (the benchmark measures
        # agreement on SmolLM2; here only a gross break is caught).
        same = sum(a == b for row, ref in zip(tokens, ir_tokens) for a, b in zip(row, ref))
        assert same >= len(PROMPTS) * NEW_TOKENS // 2


def test_int4_is_for_decoders_only(tmp_path):
    from edgeagent.examples import tiny_classifier
    from edgeagent.ir import save_proto

    model = save_proto(tiny_classifier(), tmp_path / "classifier.onnx")
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(UnsupportedPrecision, match="decoders"):
            edgeagent.compile(model, backend, "int4", out=tmp_path / backend)
        assert not (tmp_path / backend / "manifest.json").exists()


def test_openvino_mixed_and_data_aware_int4(llama_ir, tmp_path):
    """ratio < 1 and AWQ run NNCF on calibration prompts (built-in ones under the chat template)."""
    from edgeagent.errors import InputError
    from edgeagent.generate import load_decoder

    artifact = edgeagent.compile(llama_ir.path, "openvino", "int4", out=tmp_path / "mixed",
                                 options={"ratio": 0.5, "awq": True, "group_size": 16})
    assert artifact.recipe["calibration_prompts"] > 0
    assert artifact.recipe["options"]["ratio"] == 0.5 and artifact.recipe["options"]["awq"] is True
    # The manifest says which weights stayed INT8 and why (sensitivity ranking, embeddings).
    reasons = [w["reason"] for w in artifact.recipe["compressed"] if w["precision"] == "uint8"]
    assert any("ratio 0.5" in r for r in reasons) and any("embedding" in r for r in reasons)
    with load_decoder(artifact.path) as decoder:
        assert len(_greedy(decoder)[0]) == NEW_TOKENS
    with pytest.raises(InputError, match="int4"):
        edgeagent.compile(llama_ir.path, "openvino", "int8", out=tmp_path / "bad", options={"awq": True})
    assert not (tmp_path / "bad" / "manifest.json").exists()
