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


@pytest.mark.parametrize("kwargs, field", [({"bits": 3}, "bits"), ({"block_size": 24}, "block_size"),
                                           ({"block_size": 8}, "block_size"), ({"accuracy_level": 7}, "accuracy_level"),
                                           ({"embeddings": "int8"}, "embeddings")])
def test_bad_options(kwargs, field):
    with pytest.raises(InputError) as err:
        OrtWeightOnlyOptions(**kwargs)
    assert err.value.field == field
    with pytest.raises(ValueError):
        OrtWeightOnlyOptions(lm_head="int2")
