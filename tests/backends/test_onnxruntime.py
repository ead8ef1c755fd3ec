"""onnxruntime through the conformance suite, plus its recipe-specific behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeagent
from edgeagent.errors import CalibrationError, InputError
from tests import models
from tests.backends.conformance import BackendConformance


class TestOnnxRuntimeConformance(BackendConformance):
    backend_name = "onnxruntime"


@pytest.mark.parametrize("options", [
    {"int8": "dynamic"},
    {"int8": "dynamic", "per_channel": True, "reduce_range": True},
    {"int8": "static", "calibration_method": "minmax"},
    {"int8": "static", "calibration_method": "entropy", "per_channel": True},
    {"int8": "static", "calibration_method": "percentile", "reduce_range": True},
    {"int8": "static", "activation_type": "uint8", "reduce_range": True},
])
def test_int8_recipes_keep_top1(options, mlp_path, mlp_calibration, mlp_eval, tmp_path):
    x, labels = mlp_eval
    fp32 = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "fp32")
    int8 = edgeagent.compile(mlp_path, "onnxruntime", "int8", calibration=mlp_calibration,
                             options=options, out=tmp_path / "int8")
    recipe = int8.recipe
    assert recipe["name"] == options["int8"]
    assert recipe["per_channel"] == options.get("per_channel", False)
    assert recipe["reduce_range"] == options.get("reduce_range", False)
    if options["int8"] == "static":
        assert recipe["calibration_method"] == options["calibration_method"] if "calibration_method" in options else True
        assert recipe["calibration_samples"] == 128
    with edgeagent.load_session(fp32) as a, edgeagent.load_session(int8) as b:
        agreement = (a.run({"x": x})["logits"].argmax(1) == b.run({"x": x})["logits"].argmax(1)).mean()
    assert agreement >= 0.99


def test_static_graph_is_qdq_and_dynamic_is_not(mlp_path, mlp_calibration, tmp_path):
    import onnx

    static = edgeagent.compile(mlp_path, "onnxruntime", "int8", calibration=mlp_calibration,
                               out=tmp_path / "s")
    dynamic = edgeagent.compile(mlp_path, "onnxruntime", "int8", out=tmp_path / "d")
    ops_static = {n.op_type for n in onnx.load(str(static.file("model.onnx"))).graph.node}
    ops_dynamic = {n.op_type for n in onnx.load(str(dynamic.file("model.onnx"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops_static
    assert "DynamicQuantizeLinear" in ops_dynamic or "MatMulInteger" in ops_dynamic
    # With no explicit recipe the choice follows the data given, and the manifest says why.
    assert "calibration data was given" in static.manifest["evidence"]["int8_recipe_choice"]
    assert "no calibration data" in dynamic.manifest["evidence"]["int8_recipe_choice"]


def test_static_without_calibration_is_a_clear_error(mlp_path, tmp_path):
    with pytest.raises(CalibrationError, match="calibration"):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", options={"int8": "static"}, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_calibration_with_wrong_inputs_is_refused(mlp_path, tmp_path):
    bad = edgeagent.Dataset([{"image": np.zeros((1, 32), np.float32)}])
    with pytest.raises(CalibrationError, match="image"):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", calibration=bad, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert not list(tmp_path.iterdir()), "no staging folder is left behind"


def test_transformer_fusions_recorded(transformer_path, tmp_path):
    artifact = edgeagent.compile(transformer_path, "onnxruntime", "fp32", out=tmp_path / "a")
    fusions = artifact.recipe["fusions"]
    assert isinstance(fusions["applied"], bool)
    if fusions["applied"]:
        assert fusions["fused_ops"]
    off = edgeagent.compile(transformer_path, "onnxruntime", "fp32", out=tmp_path / "b",
                            options={"fusions": "off"})
    assert off.recipe["fusions"] == {"applied": False, "reason": "disabled by option"}
    feeds = models.random_feeds(edgeagent.load(transformer_path), batch=2, sequence=7)
    with edgeagent.load_session(artifact) as a, edgeagent.load_session(off) as b:
        np.testing.assert_allclose(a.run(feeds)["logits"], b.run(feeds)["logits"], atol=1e-4)


def test_threads_are_explicit(mlp_path, tmp_path):
    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "a")
    with edgeagent.load_session(artifact, options={"threads": 1}) as session:
        assert session.threads == 1
        assert session.ort_session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("options, field", [
    ({"int8": "fancy"}, "int8"),
    ({"calibration_size": "0"}, "calibration_size"),
    ({"threads": "many"}, "threads"),
    ({"no_such_option": "1"}, "no_such_option"),
])
def test_bad_options_name_the_field(options, field, mlp_path, tmp_path):
    with pytest.raises(InputError) as info:
        edgeagent.compile(mlp_path, "onnxruntime", "int8", options=options, out=tmp_path / "a")
    assert info.value.field == field


def test_manifest_is_json_with_sdk_versions(mlp_path, tmp_path):
    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "a")
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["sdk"]["onnxruntime"] and manifest["sdk"]["onnx"]
    assert manifest["schema"] == "edgeagent.artifact/1"


@pytest.mark.parametrize("recipe", ["dynamic", "static"])
def test_int8_on_a_fused_transformer(recipe, transformer_path, tmp_path):
    ir = edgeagent.load(transformer_path)
    calib = edgeagent.Dataset([models.random_feeds(ir, batch=1, sequence=12, seed=s) for s in range(16)])
    artifact = edgeagent.compile(ir, "onnxruntime", "int8", calibration=calib, options={"int8": recipe},
                                 out=tmp_path / "a")
    assert artifact.recipe["name"] == recipe
    feeds = models.random_feeds(ir, batch=3, sequence=9, seed=99)
    fp32 = edgeagent.compile(ir, "onnxruntime", "fp32", out=tmp_path / "b")
    with edgeagent.load_session(artifact) as q, edgeagent.load_session(fp32) as f:
        got, ref = q.run(feeds)["logits"], f.run(feeds)["logits"]
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.5 * (np.abs(ref).max() + 1e-6)


def test_threads_auto_measures_one_thread_against_many_and_keeps_the_faster(mlp_path, tmp_path):
    import os

    from edgeagent.backends.onnxruntime import OrtLoadOptions

    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "a")
    many = max(2, len(os.sched_getaffinity(0)))
    with edgeagent.load_session(artifact, options={"threads": "auto"}, target=None) as session:
        if len(os.sched_getaffinity(0)) > 1:
            assert set(session.thread_choice) == {"1", str(many)}
            # The kept count is the faster one (the record rounds to 0.1 µs, so ties may show).
            assert session.thread_choice[str(session.threads)] == min(session.thread_choice.values())
        x, _ = models.blobs(4)
        assert session.run({"x": x})["logits"].shape == (4, models.MLP_CLASSES)
    with edgeagent.load_session(artifact, options={"threads": "1"}) as session:
        assert session.threads == 1 and session.thread_choice is None
    with pytest.raises(InputError, match="'auto'"):
        OrtLoadOptions(threads="many")


@pytest.mark.parametrize("opset", [11, 17])
def test_split_unsqueezes_keeps_the_result(opset):
    """A multi-axis Unsqueeze becomes a chain (what the attention fusion matches), same tensor."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeagent.backends.onnxruntime import split_unsqueezes

    if opset >= 13:
        nodes = [helper.make_node("Unsqueeze", ["mask", "axes"], ["wide"], name="u")]
        inits = [numpy_helper.from_array(np.array([2, 1], np.int64), "axes")]
    else:
        nodes = [helper.make_node("Unsqueeze", ["mask"], ["wide"], name="u", axes=[1, 2])]
        inits = []
    nodes.append(helper.make_node("Unsqueeze", ["mask"], ["one"], name="single", axes=[0])
                 if opset < 13 else helper.make_node("Unsqueeze", ["mask", "zero"], ["one"], name="single"))
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("wide", TensorProto.FLOAT, [2, 1, 1, 5]),
                               helper.make_tensor_value_info("one", TensorProto.FLOAT, [1, 2, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    before = onnx.ModelProto.FromString(model.SerializeToString())
    assert split_unsqueezes(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze"] * 3  # two for "u", "single" untouched
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    want = ort.InferenceSession(before.SerializeToString()).run(None, {"mask": x})
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"mask": x})
    assert got[0].shape == (2, 1, 1, 5)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_a_malformed_disabled_optimizers_entry_is_refused(mlp_path, tmp_path):
    from edgeagent.errors import ArtifactError

    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["recipe"]["disabled_optimizers"] = "SkipLayerNormFusion"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="disabled_optimizers"):
        edgeagent.load_session(tmp_path / "a")
    assert artifact.recipe["disabled_optimizers"] == ["SkipLayerNormFusion"]
