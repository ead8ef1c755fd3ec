"""The onnxruntime backend's fused decoder graph (edgeagent.causal.ort_fused) on the tiny decoders.

The fused graph must be the IR's model on fewer, fused nodes: the same logits and caches on a
probe with left padding, single-token and multi-token steps after a cache (both families);
the same greedy tokens once compiled, fp32 and INT4; a record in the manifest; and the
standard graph kept, with the reason, where the builder does not apply (auto), or a typed
error with nothing written (on).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import edgeagent
from edgeagent.causal.ort_fused import FusionUnsupported, build_fused_decoder, check_fused_parity
from edgeagent.errors import UnsupportedModel

PROMPTS = ["turn on the kitchen lights", "set a timer for 3 minutes", "lock the front door please"]


def _session(path_or_proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _greedy(artifact, **kwargs) -> list[tuple[int, ...]]:
    from edgeagent.generate import generate, load_decoder

    with load_decoder(artifact.path if hasattr(artifact, "path") else artifact) as decoder:
        results = generate(decoder, PROMPTS, max_new_tokens=12, add_generation_prompt=False, **kwargs)
    return [r.token_ids for r in results]


@pytest.mark.parametrize("family", ["llama_ir", "qwen2_ir"])
def test_fused_graph_is_the_ir_on_fewer_nodes(family, request):
    ir = request.getfixturevalue(family)
    metadata = dict(ir.metadata)
    graph = build_fused_decoder(ir.model.path, metadata)
    layers = metadata["num_layers"]
    assert graph.ops["GroupQueryAttention"] == layers  # with the rotary embedding inside
    assert graph.ops["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert graph.nodes < graph.source_nodes / 3
    # same contract: inputs and outputs by name
    assert [i.name for i in graph.proto.graph.input] == [i.name for i in onnx.load(str(ir.model.path)).graph.input]
    reference, fused = _session(str(ir.model.path)), _session(graph.proto)
    for shared in (False, True):  # cache as past → present, and as one buffer per layer
        report = check_fused_parity(reference, fused, metadata, shared=shared)
        assert report["ok"], report
        assert report["argmax_agreement"] == 1.0
        assert report["logits_max_abs_diff"] < 1e-4


def test_probe_catches_a_wrong_weight(llama_ir):
    from onnx import numpy_helper

    graph = build_fused_decoder(llama_ir.model.path, dict(llama_ir.metadata))
    proto = graph.proto
    target = next(t for t in proto.graph.initializer if t.name == "model.layers.1.mlp.down_proj.weight")
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target)[::-1].copy(), target.name))
    report = check_fused_parity(_session(str(llama_ir.model.path)), _session(proto), dict(llama_ir.metadata))
    assert not report["ok"]
    assert report["logits_max_abs_diff"] > 1e-2


def test_compiled_fp32_is_fused_and_generates_what_the_standard_graph_does(llama_ir, tmp_path):
    fused = edgeagent.compile(llama_ir.path, "onnxruntime", "fp32", out=tmp_path / "fused")
    standard = edgeagent.compile(llama_ir.path, "onnxruntime", "fp32", out=tmp_path / "standard",
                                 options={"fusions": "off"})
    record = fused.recipe["fusions"]
    assert record["applied"] is True and record["parity"]["ok"] is True
    assert record["shared_kv_parity"]["ok"] is True and fused.capabilities["kv_buffer"] == "shared"
    assert standard.capabilities["kv_buffer"] == "separate"
    assert record["ops"]["GroupQueryAttention"] == 2
    assert "GroupQueryAttention" in _ops(fused.path / "model.onnx")
    assert standard.recipe["fusions"] == {"applied": False, "reason": "fusions=off"}
    assert "GroupQueryAttention" not in _ops(standard.path / "model.onnx")
    # The fused artifact keeps its weights beside the graph, listed and hashed like the graph.
    assert (fused.path / "model.onnx.data").is_file() and "model.onnx.data" in fused.manifest["files"]
    # A batch of prompts of different lengths: left padding, then rows finishing at different steps.
    assert _greedy(fused) == _greedy(standard)
    # Sampling draws from the same distributions, so a seed gives the same tokens.
    assert _greedy(fused, temperature=0.8, seed=3) == _greedy(standard, temperature=0.8, seed=3)


def test_compiled_int4_quantizes_the_fused_projections(llama_ir, tmp_path):
    fused = edgeagent.compile(llama_ir.path, "onnxruntime", "int4", out=tmp_path / "fused")
    standard = edgeagent.compile(llama_ir.path, "onnxruntime", "int4", out=tmp_path / "standard",
                                 options={"fusions": "off"})
    modules = {q["module"] for q in fused.recipe["quantized"]}
    assert {"model.layers.0.self_attn.qkv_proj", "model.layers.0.mlp.gate_up_proj", "lm_head"} <= modules
    assert _ops(fused.path / "model.onnx").count("MatMulNBits") == 2 * 4 + 1
    # Blocks run along K, so concatenating q/k/v (or gate/up) along N quantizes every column as
    # the separate matrices were: the same INT4 model, on fewer nodes.
    assert _greedy(fused) == _greedy(standard)


def _ir_copy_with(llama_ir, tmp_path, **config_changes):
    folder = tmp_path / "ir"
    shutil.copytree(llama_ir.path, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_what_the_builder_does_not_rebuild_keeps_the_standard_graph_or_fails_when_required(llama_ir, tmp_path):
    folder = _ir_copy_with(llama_ir, tmp_path, hidden_act="gelu")
    with pytest.raises(FusionUnsupported, match="hidden_act"):
        build_fused_decoder(folder / "model.onnx", dict(llama_ir.metadata))
    kept = edgeagent.compile(folder, "onnxruntime", "fp32", out=tmp_path / "auto")
    assert kept.recipe["fusions"]["applied"] is False
    assert "hidden_act 'gelu'" in kept.recipe["fusions"]["reason"]
    assert "GroupQueryAttention" not in _ops(kept.path / "model.onnx")
    with pytest.raises(UnsupportedModel, match="fusions=on.*hidden_act"):
        edgeagent.compile(folder, "onnxruntime", "fp32", out=tmp_path / "on", options={"fusions": "on"})
    assert not (tmp_path / "on" / "manifest.json").exists()


def test_rope_types_it_does_not_rebuild(llama_ir, tmp_path):
    folder = _ir_copy_with(llama_ir, tmp_path, rope_parameters={"rope_type": "yarn", "factor": 4.0,
                                                                "rope_theta": 10000.0})
    with pytest.raises(FusionUnsupported, match="yarn"):
        build_fused_decoder(folder / "model.onnx", dict(llama_ir.metadata))


def test_fused_artifact_runs_a_multi_token_step_after_a_cache_at_batch_two(llama_ir, tmp_path):
    """Constrained decoding fast-forwards several tokens in one step; GroupQueryAttention accepts
    that after a cache only with per-row query lengths, which the fused graph passes."""
    from edgeagent.generate import load_decoder

    artifact = edgeagent.compile(llama_ir.path, "onnxruntime", "fp32", out=tmp_path / "a")
    with load_decoder(artifact.path) as fused, load_decoder(llama_ir.path) as reference:
        got, want = fused.new_cache(2), reference.new_cache(2)
        first = np.array([[5, 6, 7, 8], [0, 9, 10, 11]], np.int64)
        valid = np.array([[True] * 4, [False, True, True, True]])
        for tokens, mask in ((first, valid), (np.array([[12, 13, 14], [15, 16, 17]]), None)):
            a, b = got.step(tokens, mask), want.step(tokens, mask)
            real = np.ones(tokens.shape, bool) if mask is None else mask
            np.testing.assert_allclose(a[real], b[real], atol=1e-4)


def test_shared_cache_grows_and_reorders_like_the_separate_one(llama_ir, tmp_path):
    """One buffer per layer, doubled when full (here from 4 positions) and reindexed for beams,
    must give the logits of the IR's past → present cache step for step."""
    from edgeagent.backends.onnxruntime import OrtSharedKVCache
    from edgeagent.generate import load_decoder

    artifact = edgeagent.compile(llama_ir.path, "onnxruntime", "fp32", out=tmp_path / "a")
    rng = np.random.default_rng(0)
    with load_decoder(artifact.path) as fused, load_decoder(llama_ir.path) as reference:
        assert isinstance(fused.session.decoder_cache(1), OrtSharedKVCache)
        got = OrtSharedKVCache(fused.session, 3, max_length=llama_ir.metadata["max_length"], initial_capacity=4)
        want = reference.new_cache(3)
        capacities = []
        for step in range(12):
            tokens = rng.integers(3, 384, size=(got.batch, 3 if step == 0 else 1))
            np.testing.assert_allclose(got.step(tokens), want.step(tokens), atol=1e-4)
            capacities.append(got.capacity)
            if step == 5:  # beams: rows reordered and duplicated
                got.select([2, 0, 0])
                want.select([2, 0, 0])
        assert capacities[0] == 4 and capacities[-1] == 16  # 3 + 11 positions: 4 → 8 → 16
