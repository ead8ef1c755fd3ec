"""OpenVINO: the IR made stateful gives the float32 ONNX model's greedy tokens; beam_idx
reorders the cache; nncf.compress_weights' INT8/INT4 results are reported weight by weight."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeagent.causal import parity
from edgeagent.errors import InputError

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.openvino

from edgeagent.causal.openvino_decoder import (OVStatefulDecoder, OVWeightOptions,  # noqa: E402
                                               compress_weights_openvino, prefill_feeds,
                                               to_stateful_openvino)

LAYOUT = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 16}


def _cosine(ref, got):
    return float((np.sum(ref * got, -1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)).min())


@pytest.mark.parametrize("which", ["llama_ir", "qwen2_ir"])
def test_stateful_model_gives_the_onnx_greedy_tokens(request, which, prompts_ids):
    ir = request.getfixturevalue(which)
    model = to_stateful_openvino(ir.model.path, ir.num_layers)
    assert [p.get_any_name() for p in model.inputs] == ["input_ids", "attention_mask", "position_ids", "beam_idx"]
    assert [p.get_any_name() for p in model.outputs] == ["logits"]
    assert len(model.get_sinks()) == 2 * ir.num_layers  # one Assign per key and value
    decoder = OVStatefulDecoder(model)
    step = parity.ort_step(ir.model.path, ir.num_layers)
    for prompt in prompts_ids:
        expected, _ = parity.greedy(step, prompt, 16, **LAYOUT)
        assert decoder.greedy(prompt, 16) == expected
    # reset_state starts over: the same prompt again gives the same tokens
    assert decoder.greedy(prompts_ids[0], 4) == parity.greedy(step, prompts_ids[0], 4, **LAYOUT)[0]


def test_beam_idx_reorders_the_cache(llama_ir, prompts_ids):
    """After a batch-2 prefill, beam_idx [1, 1] copies row 1's cache into both rows."""
    first, second = prompts_ids[0][:10], prompts_ids[1][:10]
    ids = np.asarray([first, second])
    mask = np.ones_like(ids)
    pos = parity.position_ids(mask)
    decoder = OVStatefulDecoder(to_stateful_openvino(llama_ir.model.path, 2))
    decoder.request.reset_state()
    decoder.step(ids, mask, pos)
    token, mask2, pos2 = np.asarray([[7], [7]]), np.ones((2, 11), np.int64), np.asarray([[10], [10]])
    out = decoder.request.infer({"input_ids": token, "attention_mask": mask2, "position_ids": pos2,
                                 "beam_idx": np.asarray([1, 1], np.int32)})
    logits = np.asarray(out[decoder.compiled.output("logits")])
    step = parity.ort_step(llama_ir.model.path, 2)
    _, cache = step(np.asarray([second]), np.ones((1, 10), np.int64), np.arange(10)[None], parity.empty_past(1, **LAYOUT))
    expected, _ = step(token[:1], mask2[:1], pos2[:1], cache)
    np.testing.assert_allclose(logits[0], expected[0], atol=1e-4)
    np.testing.assert_allclose(logits[1], expected[0], atol=1e-4)


def _prefill(decoder, prompts):
    rows = []
    for prompt in prompts:
        decoder.request.reset_state()
        ids = np.asarray([prompt])
        rows.append(decoder.step(ids, np.ones_like(ids), parity.position_ids(np.ones_like(ids)))[0])
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def ov_fp32_logits(llama_ir, prompts_ids):
    return _prefill(OVStatefulDecoder(to_stateful_openvino(llama_ir.model.path, 2)), prompts_ids)


def test_int8_per_channel(llama_ir, prompts_ids, ov_fp32_logits):
    model = to_stateful_openvino(llama_ir.model.path, 2)
    compressed, report = compress_weights_openvino(model, OVWeightOptions(mode="int8_asym"),
                                                   onnx_path=llama_ir.model.path)
    modules = {w.module for w in report.compressed}
    assert {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"} <= modules
    assert {w.precision for w in report.weights} == {"uint8"} and report.kept == ()
    assert all(w.group_size is None for w in report.weights)
    q = next(w for w in report.weights if w.module == "model.layers.0.self_attn.k_proj")
    assert (q.k, q.n) == (64, 32)
    cos = _cosine(ov_fp32_logits, _prefill(OVStatefulDecoder(compressed), prompts_ids))
    assert cos > 0.995
    json.dumps(report.to_json())


def test_int4_groups_and_backup_precision(llama_ir, prompts_ids, ov_fp32_logits):
    model = to_stateful_openvino(llama_ir.model.path, 2)
    compressed, report = compress_weights_openvino(model, OVWeightOptions(mode="int4_sym", group_size=32),
                                                   onnx_path=llama_ir.model.path)
    body = [w for w in report.weights if w.module.startswith("model.layers.")]
    assert body and all(w.precision == "int4" and w.group_size == 32 for w in body if w.reason is None)
    backup = [w for w in report.weights if w.precision in ("int8", "uint8")]
    assert backup and all(w.reason for w in backup)
    assert any("embedding or LM head" in w.reason for w in backup)
    assert _cosine(ov_fp32_logits, _prefill(OVStatefulDecoder(compressed), prompts_ids)) > 0.8
    doc = report.to_json()
    assert doc["options"]["mode"] == "int4_sym" and doc["precisions"].get("int4", 0) >= 10


def test_group_size_fallback(llama_ir):
    _, adjusted = compress_weights_openvino(to_stateful_openvino(llama_ir.model.path, 2),
                                            OVWeightOptions(group_size=128), onnx_path=llama_ir.model.path)
    # K = 64 (hidden) is adjusted to group 64; K = 128 (down_proj) keeps 128
    groups = {w.module: w.group_size for w in adjusted.weights if w.precision == "uint4"}
    assert groups["model.layers.0.self_attn.q_proj"] == 64 and groups["model.layers.0.mlp.down_proj"] == 128
    _, ignored = compress_weights_openvino(to_stateful_openvino(llama_ir.model.path, 2),
                                           OVWeightOptions(group_size=48, group_size_fallback="ignore"),
                                           onnx_path=llama_ir.model.path)
    assert ignored.kept and all("not a multiple of group_size 48" in w.reason for w in ignored.kept)
    assert {w.k for w in ignored.kept} == {64, 128}


def test_data_aware_methods_need_and_use_prompts(llama_ir, prompts_ids):
    options = OVWeightOptions(group_size=32, awq=True, scale_estimation=True)
    with pytest.raises(InputError, match="calibration prompts"):
        compress_weights_openvino(to_stateful_openvino(llama_ir.model.path, 2), options)
    compressed, report = compress_weights_openvino(to_stateful_openvino(llama_ir.model.path, 2), options,
                                                   dataset=prefill_feeds(prompts_ids))
    assert report.calibration_samples == len(prompts_ids)
    assert len(OVStatefulDecoder(compressed).greedy(prompts_ids[0], 4)) == 4


@pytest.mark.parametrize("kwargs", [{"ratio": 0.0}, {"ratio": 1.5}, {"mode": "int8_sym", "awq": True},
                                    {"mode": "int8_asym", "ratio": 0.5}, {"group_size": 0}, {"subset_size": 0}])
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        OVWeightOptions(**kwargs)
