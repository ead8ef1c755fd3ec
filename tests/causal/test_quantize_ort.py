"""ONNX Runtime weight-only INT4/INT8 (MatMulNBits) on the tiny decoders: what is quantized,
the tied LM head, partial blocks, exclusions, the report, and logits close to float32.

Thresholds are for random tiny models, whose near-uniform logits make any noise visible
(INT4 measured cosine ≥ 0.89, INT8 ≥ 0.999 here); a wrong weight layout gives cosine near 0.
Greedy agreement on a real model is the slow test's and the benchmark's job."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeagent.causal import parity
from edgeagent.causal.quantize_ort import OrtWeightOnlyOptions, quantize_weights_ort
from edgeagent.errors import InputError

LAYOUT = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 16}
LINEARS = {f"model.layers.{i}.{m}" for i in range(2) for m in
           ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


def _prefill_logits(path, prompts):
    ids, mask = parity.left_pad(prompts, 0)
    logits, _ = parity.ort_step(path, 2)(ids, mask, parity.position_ids(mask), parity.empty_past(len(prompts), **LAYOUT))
    return logits[mask.astype(bool)]


def _similarity(ref, got):
    cos = np.sum(ref * got, -1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)
    return float(cos.min()), float((ref.argmax(-1) == got.argmax(-1)).mean())


def _nodes(path):
    return onnx.load(str(path)).graph.node


@pytest.fixture(scope="module")
def fp32_logits(llama_ir, prompts_ids):
    return _prefill_logits(llama_ir.model.path, prompts_ids)


def test_int4_default_quantizes_every_linear_and_the_tied_head(llama_ir, prompts_ids, fp32_logits, tmp_path):
    report = quantize_weights_ort(llama_ir.model, tmp_path / "int4.onnx")
    assert {q.module for q in report.quantized} == LINEARS | {"lm_head"}
    assert all(q.precision == "int4" and q.block_size == 32 and not q.padded for q in report.quantized)
    assert report.kept == ()
    head = next(q for q in report.quantized if q.module == "lm_head")
    assert (head.k, head.n) == (64, 384)
    nodes = _nodes(tmp_path / "int4.onnx")
    nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
    assert len(nbits) == 15
    for node in nbits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["accuracy_level"] == 4 and attrs["bits"] == 4 and attrs["block_size"] == 32
    # the embedding Gather keeps the float32 table; the head has its own quantized copy
    assert any(n.op_type == "Gather" for n in nodes)
    cos, top1 = _similarity(fp32_logits, _prefill_logits(tmp_path / "int4.onnx", prompts_ids))
    assert cos > 0.8 and top1 > 0.4
    assert report.bytes_after < report.bytes_before
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["options"]["lm_head"] == "int4" and len(doc["quantized"]) == 15


def test_int8_is_close_to_float32(llama_ir, prompts_ids, fp32_logits, tmp_path):
    report = quantize_weights_ort(llama_ir.model, tmp_path / "int8.onnx", OrtWeightOnlyOptions(bits=8))
    assert {q.precision for q in report.quantized} == {"int8"} and len(report.quantized) == 15
    cos, top1 = _similarity(fp32_logits, _prefill_logits(tmp_path / "int8.onnx", prompts_ids))
    assert cos > 0.995 and top1 > 0.9
    tokens, _ = parity.greedy(parity.ort_step(tmp_path / "int8.onnx", 2), prompts_ids[0], 8, **LAYOUT)
    assert len(tokens) == 8


def test_lm_head_kept_in_float32_stays_tied(llama_ir, tmp_path):
    report = quantize_weights_ort(llama_ir.model, tmp_path / "q.onnx", OrtWeightOnlyOptions(lm_head="fp32"))
    assert [(k.module, k.reason) for k in report.kept] == [("lm_head", "lm_head=fp32")]
    assert {q.module for q in report.quantized} == LINEARS
    nodes = _nodes(tmp_path / "q.onnx")
    head = next(n for n in nodes if "logits" in n.output)
    assert head.op_type == "MatMul"
    producer = next(n for n in nodes if head.input[1] in n.output)
    assert producer.op_type == "Transpose"  # still the embedding, shared


def test_int8_head_with_int4_body(qwen2_ir, tmp_path):
    report = quantize_weights_ort(qwen2_ir.model, tmp_path / "q.onnx", OrtWeightOnlyOptions(lm_head="int8"))
    precisions = {q.module: q.precision for q in report.quantized}
    assert precisions.pop("lm_head") == "int8" and set(precisions.values()) == {"int4"}


def test_partial_blocks_and_exclusions_are_reported(llama_ir, tmp_path):
    options = OrtWeightOnlyOptions(block_size=128, pad_partial_blocks=False)
    report = quantize_weights_ort(llama_ir.model, tmp_path / "q.onnx", options)
    # only down_proj has K = intermediate 128; every other K is the hidden width 64
    assert {q.module for q in report.quantized} == {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}
    assert all("K=64 is not a multiple of block_size 128" in k.reason for k in report.kept)
    assert len(report.kept) == 13
    padded = quantize_weights_ort(llama_ir.model, tmp_path / "p.onnx", OrtWeightOnlyOptions(block_size=128))
    assert len(padded.quantized) == 15 and sum(q.padded for q in padded.quantized) == 13
    excluded = quantize_weights_ort(llama_ir.model, tmp_path / "e.onnx",
                                    OrtWeightOnlyOptions(exclude=("model.layers.0.mlp.down_proj",)))
    assert [(k.module, k.reason) for k in excluded.kept] == [("model.layers.0.mlp.down_proj", "excluded by option")]


def test_int4_embeddings_use_gather_block_quantized(llama_ir, prompts_ids, fp32_logits, tmp_path):
    report = quantize_weights_ort(llama_ir.model, tmp_path / "q.onnx", OrtWeightOnlyOptions(embeddings="int4"))
    assert "model.embed_tokens" in {q.module for q in report.quantized}
    assert any(n.op_type == "GatherBlockQuantized" for n in _nodes(tmp_path / "q.onnx"))
    cos, _ = _similarity(fp32_logits, _prefill_logits(tmp_path / "q.onnx", prompts_ids))
    assert cos > 0.8


def test_tied_int4_embeddings_share_the_heads_blocks(llama_ir, prompts_ids, tmp_path):
    """A tied model's INT4 head and INT4 embeddings are one table (as onnxruntime-genai writes):
    the Gather reads the head's MatMulNBits blocks, no float32 table is left, and the logits are
    those of the same model with the embedding quantized on its own (the same blocks)."""
    shared = quantize_weights_ort(llama_ir.model, tmp_path / "shared.onnx", OrtWeightOnlyOptions(embeddings="int4"))
    graph = onnx.load(str(tmp_path / "shared.onnx")).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and "logits" in n.output)
    reshape = next(n for n in graph.node if gather.input[0] in n.output)
    assert reshape.op_type == "Reshape" and reshape.input[0] == head.input[1] and gather.input[2] == head.input[2]
    assert not any(t.data_type == onnx.TensorProto.FLOAT and list(t.dims) == [384, 64] for t in graph.initializer)
    assert any(q.reason and "shares" in q.reason for q in shared.quantized)
    # An asymmetric head has zero points the Gather would need too: the table is quantized on its own.
    separate = quantize_weights_ort(llama_ir.model, tmp_path / "separate.onnx",
                                    OrtWeightOnlyOptions(embeddings="int4", symmetric=False))
    assert not any(q.reason and "shares" in q.reason for q in separate.quantized)
    assert shared.bytes_after < separate.bytes_after
    own_table = quantize_weights_ort(llama_ir.model, tmp_path / "own.onnx",
                                     OrtWeightOnlyOptions(embeddings="int4", lm_head="int8"))
    assert not any(q.reason and "shares" in q.reason for q in own_table.quantized)
    cos, agreement = _similarity(_prefill_logits(tmp_path / "own.onnx", prompts_ids),
                                 _prefill_logits(tmp_path / "shared.onnx", prompts_ids))
    assert cos > 0.89  # INT8 against INT4 head; same embedding blocks either way


@pytest.mark.parametrize("kwargs, field", [({"bits": 3}, "bits"), ({"block_size": 24}, "block_size"),
                                           ({"block_size": 8}, "block_size"), ({"accuracy_level": 7}, "accuracy_level"),
                                           ({"embeddings": "int8"}, "embeddings")])
def test_bad_options(kwargs, field):
    with pytest.raises(InputError) as err:
        OrtWeightOnlyOptions(**kwargs)
    assert err.value.field == field
    with pytest.raises(ValueError):
        OrtWeightOnlyOptions(lm_head="int2")


def _q4_1_grid(rng, k, n, block=32):
    """A [K, N] weight on GGUF Q4_1's grid: per block of 32 along K, min + scale * q, q 0..15."""
    q = rng.integers(0, 16, (k, n))
    q[0::block] = 0   # every block spans the full 0..15, as Q4_1's min/max rounding gives
    q[1::block] = 15
    lo = np.repeat(rng.normal(0, 0.1, (k // block, n)), block, axis=0)
    scale = np.repeat(rng.uniform(0.005, 0.02, (k // block, n)), block, axis=0)
    return (lo + scale * q).astype(np.float32)


@pytest.mark.parametrize("level", [0, 4])
def test_minmax_blocks_reproduce_a_q4_1_grid(level):
    from onnx import TensorProto, helper, numpy_helper

    from edgeagent.causal.quantize_ort import minmax_blocks

    rng = np.random.default_rng(0)
    k, n = 96, 40
    w = _q4_1_grid(rng, k, n)
    w[:32, 3] = 0.25  # a constant block
    packed, scales, zero_points = minmax_blocks(w, 4, 32)
    nibbles = np.stack([packed & 15, packed >> 4], -1).reshape(n, k // 32, 32).astype(np.float32)
    dequant = ((nibbles - zero_points[..., None]) * scales[..., None]).reshape(n, k).T
    np.testing.assert_allclose(dequant, w, atol=1e-6)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales", "zp"], ["Y"], domain="com.microsoft",
                            K=k, N=n, bits=4, block_size=32, accuracy_level=level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, n])],
                              [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "scales"),
                               numpy_helper.from_array(zero_points, "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    import onnxruntime as ort

    a = rng.standard_normal((2, k)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    # level 0 computes in float32: exact; level 4 quantizes the activations to int8 per block
    np.testing.assert_allclose(y, a @ w, atol=1e-4 if level == 0 else 0.05 * np.abs(a @ w).max())


@pytest.fixture(scope="module")
def q4_1_ir(llama_dir, tmp_path_factory):
    """A tiny Llama whose linear weights sit on a Q4_1 grid, as a dequantized Q4_1 GGUF's do."""
    import torch
    import transformers

    from edgeagent.causal import export_causal_lm

    tmp = tmp_path_factory.mktemp("q4_1")
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("proj.weight"):  # [N, K]; GGUF blocks run along K
                param.copy_(torch.from_numpy(_q4_1_grid(rng, param.shape[1], param.shape[0]).T.copy()))
    model.save_pretrained(tmp / "hf")
    transformers.AutoTokenizer.from_pretrained(llama_dir).save_pretrained(tmp / "hf")
    return export_causal_lm(tmp / "hf", tmp / "ir", greedy_tokens=4, decode_steps=2)


@pytest.mark.parametrize("zero_points, level, atol", [("float", 0, 2e-4), ("offset", 0, 2e-4), ("offset", 4, None)])
def test_exact_grids_keep_a_gguf_q4_1_model(q4_1_ir, tmp_path, zero_points, level, atol):
    """INT4 on min/max blocks gives the float32 logits back; integer zero points do not."""
    prompts = parity.encode_prompts(q4_1_ir.path, list(parity.DEFAULT_PROMPTS))
    fp32 = _prefill_logits(q4_1_ir.model.path, prompts)
    options = OrtWeightOnlyOptions(symmetric=False, zero_points=zero_points, accuracy_level=level, lm_head="fp32")
    report = quantize_weights_ort(q4_1_ir.model, tmp_path / "exact.onnx", options)
    assert len(report.quantized) == 14 and report.to_json()["quantizer"].startswith("edgeagent min/max")
    got = _prefill_logits(tmp_path / "exact.onnx", prompts)
    integer = OrtWeightOnlyOptions(symmetric=False, accuracy_level=level, lm_head="fp32")
    quantize_weights_ort(q4_1_ir.model, tmp_path / "integer.onnx", integer)
    integer_error = np.abs(_prefill_logits(tmp_path / "integer.onnx", prompts) - fp32)
    if atol is not None:
        np.testing.assert_allclose(got, fp32, atol=atol)
        assert integer_error.max() > 1e-2
    else:  # int8 activations (accuracy_level 4) add their own error; the weights' is gone
        assert np.abs(got - fp32).mean() < 0.7 * integer_error.mean()
    nodes = _nodes(tmp_path / "exact.onnx")
    if zero_points == "offset":
        # one blocksum per distinct input: q/k/v share one, gate/up share one → 4 per layer
        assert sum(n.op_type == "ReduceSum" for n in nodes) == 8
        nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
        assert all(n.input[3].endswith("_zp8") for n in nbits)


def test_exact_grid_options():
    with pytest.raises(InputError, match="symmetric=False"):
        OrtWeightOnlyOptions(zero_points="float")
    with pytest.raises(InputError, match="8-bit"):
        OrtWeightOnlyOptions(bits=8, symmetric=False, zero_points="offset")
    with pytest.raises(ValueError):
        OrtWeightOnlyOptions(symmetric=False, zero_points="half")
