"""TensorRT's decoder pieces that need no GPU: the optimization profile and the weight-only graphs.

The weight-only INT4 graph is the one TensorRT would build from (INT4 blocks behind
DequantizeLinear, symmetric, opset 21); ONNX Runtime runs the same graph on the CPU, so its
numerics are checked here against the float32 IR. Engines themselves are unverified here (no
NVIDIA GPU): those tests live in tests/backends/test_tensorrt.py and skip without one.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.tensorrt.decoder import decoder_profile, weight_only_graph
from edgeagent.errors import BackendUnavailable, InputError, UnsupportedModel


def _feeds(meta, ids):
    ids = np.asarray([ids], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for layer in range(int(meta["num_layers"])):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = np.zeros(
                (1, int(meta["num_kv_heads"]), 0, int(meta["head_dim"])), np.float32)
    return feeds


def test_one_profile_spans_prefill_and_decode(llama_ir):
    meta = llama_ir.metadata
    profile = decoder_profile(llama_ir.model.inputs, llama_ir.model.metadata, max_batch=4, max_prompt=64)
    length = int(meta["max_length"])
    assert profile["input_ids"].min == (1, 1) and profile["input_ids"].max == (4, 64)
    assert profile["attention_mask"].max == (4, length)
    past = profile["past_key_values.0.key"]
    heads, dim = int(meta["num_kv_heads"]), int(meta["head_dim"])
    assert past.min == (1, heads, 0, dim)  # the prefill's empty past is inside the range
    assert past.max == (4, heads, length - 1, dim)
    assert past.opt[2] == length // 2 and profile["input_ids"].opt == (1, 1)  # tuned for decode steps
    assert set(profile) == {s.name for s in llama_ir.model.inputs}
    assert decoder_profile(llama_ir.model.inputs, llama_ir.model.metadata, max_batch=1, max_prompt=8,
                           max_length=32)["attention_mask"].max == (1, 32)


def test_profile_refuses_what_cannot_fit(llama_ir):
    with pytest.raises(InputError, match="below the model's"):
        decoder_profile(llama_ir.model.inputs, llama_ir.model.metadata, max_batch=1, max_prompt=10_000)
    with pytest.raises(UnsupportedModel, match="num_kv_heads"):
        decoder_profile(llama_ir.model.inputs, {"max_length": 64}, max_batch=1, max_prompt=8)


def test_int4_weight_only_graph_runs_on_onnx_runtime_close_to_float(llama_ir, tmp_path):
    import onnx
    import onnxruntime as ort

    graph, report = weight_only_graph(llama_ir.model, 4, block_size=64)
    assert report["weights"] == "int4" and report["symmetric"] and report["quantized_matmuls"] > 0
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 21
    constants = {i.name: i for i in graph.graph.initializer}
    dequantize = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    assert all(constants[n.input[0]].data_type == onnx.TensorProto.INT4 for n in dequantize)
    assert all(len(n.input) == 2 for n in dequantize)  # no zero point: TensorRT's INT4 DQ refuses one
    assert {a.i for n in dequantize for a in n.attribute if a.name == "block_size"} == {64}
    path = tmp_path / "woq4.onnx"
    onnx.save(graph, path)
    meta = llama_ir.metadata
    feeds = _feeds(meta, [1, 5, 7, 9, 11, 13, 17, 19])
    reference = ort.InferenceSession(str(llama_ir.model.path)).run(["logits"], feeds)[0]
    quantized = ort.InferenceSession(str(path)).run(["logits"], feeds)[0]
    assert np.isfinite(quantized).all()
    # A random model's logits move by INT4 rounding, but stay correlated with float's.
    assert np.corrcoef(reference.ravel(), quantized.ravel())[0, 1] > 0.9


def test_lm_head_can_stay_float(llama_ir):
    graph, report = weight_only_graph(llama_ir.model, 4, block_size=64, lm_head=False)
    kept = report["kept_in_float"]
    assert kept and "LM head" in kept[0]["reason"]
    head = next(n for n in graph.graph.node if n.name == kept[0]["node"])
    producers = {out: n.op_type for n in graph.graph.node for out in n.output}
    assert producers.get(head.input[1]) != "DequantizeLinear"


def test_int8_weight_only_graph_needs_modelopt_or_says_so(llama_ir):
    try:
        import modelopt.onnx.quantization.int4  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="nvidia-modelopt"):
            weight_only_graph(llama_ir.model, 8)
        return
    import onnx

    graph, report = weight_only_graph(llama_ir.model, 8, block_size=64)
    constants = {i.name: i for i in graph.graph.initializer}
    assert report["weights"] == "int8"
    assert {constants[n.input[0]].data_type for n in graph.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in constants} == {onnx.TensorProto.INT8}


def test_bad_weight_only_settings(llama_ir):
    with pytest.raises(InputError, match="64 or 128"):
        weight_only_graph(llama_ir.model, 4, block_size=32)
    with pytest.raises(InputError, match="4 or 8"):
        weight_only_graph(llama_ir.model, 2)


def test_compiling_a_decoder_for_tensorrt_without_a_gpu_is_unavailable(llama_ir, tmp_path):
    import edgeagent
    from edgeagent.backend import get_backend

    if get_backend("tensorrt").available():
        pytest.skip("TensorRT and a GPU are here: tests/backends/test_tensorrt.py builds engines")
    with pytest.raises(BackendUnavailable):
        edgeagent.compile(llama_ir.path, "tensorrt", "int4", out=tmp_path / "engine")
    assert not (tmp_path / "engine" / "manifest.json").exists()
