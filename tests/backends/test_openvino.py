"""openvino through the conformance suite, plus its recipes, devices and bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgeagent
from edgeagent.errors import BackendUnavailable, CalibrationError, UnsupportedModel
from tests import models
from tests.backends.conformance import BackendConformance

pytestmark = [
    pytest.mark.openvino,
    pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                       reason="openvino and nncf are not installed: pip install 'edgeagent[openvino]'"),
]


class TestOpenVINOConformance(BackendConformance):
    backend_name = "openvino"
    load_options = {"cache_dir": ""}


@pytest.fixture
def ov_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAGENT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_fp32_pins_f32_inference_precision(mlp_path, tmp_path, ov_home):
    import openvino.properties.hint as hints

    artifact = edgeagent.compile(mlp_path, "openvino", "fp32", out=tmp_path / "a")
    assert artifact.recipe["inference_precision"] == "f32"
    with edgeagent.load_session(artifact) as session:
        assert str(session.compiled_model.get_property(hints.inference_precision)) in ("<Type: 'float32'>", "f32")


def test_artifact_holds_openvino_ir(mlp_path, tmp_path, ov_home):
    artifact = edgeagent.compile(mlp_path, "openvino", "fp16", out=tmp_path / "a")
    assert set(artifact.manifest["files"]) == {"model.xml", "model.bin"}
    fp32 = edgeagent.compile(mlp_path, "openvino", "fp32", out=tmp_path / "b")
    assert artifact.size_bytes < fp32.size_bytes, "fp16 compresses the weights"


def test_model_cache_is_written_and_reused(mlp_path, tmp_path, ov_home):
    artifact = edgeagent.compile(mlp_path, "openvino", "fp32", out=tmp_path / "a")
    with edgeagent.load_session(artifact):
        pass
    cache = ov_home / "openvino-cache"
    assert cache.is_dir() and any(cache.iterdir())
    entries = sorted(p.name for p in cache.iterdir())
    with edgeagent.load_session(artifact) as session:
        assert session.run({"x": np.zeros((1, 32), np.float32)})["logits"].shape == (1, 10)
    assert sorted(p.name for p in cache.iterdir()) == entries, "the second load reuses the cache"


def test_threads_and_hint_are_applied(mlp_path, tmp_path, ov_home):
    import openvino.properties as props
    import openvino.properties.hint as hints

    artifact = edgeagent.compile(mlp_path, "openvino", "fp32", out=tmp_path / "a")
    with edgeagent.load_session(artifact, options={"threads": 1, "performance_hint": "throughput"}) as session:
        assert session.compiled_model.get_property(props.inference_num_threads) == 1
        assert str(session.compiled_model.get_property(hints.performance_mode)).upper().endswith("THROUGHPUT")


def test_transformer_int8_uses_transformer_model_type(transformer_path, tmp_path, ov_home):
    calib = edgeagent.Dataset([models.random_feeds(edgeagent.load(transformer_path), batch=1, sequence=12, seed=s)
                               for s in range(16)])
    artifact = edgeagent.compile(transformer_path, "openvino", "int8", calibration=calib, out=tmp_path / "a",
                                 options={"subset_size": 16})
    assert artifact.recipe["model_type"] == "transformer"
    feeds = models.random_feeds(edgeagent.load(transformer_path), batch=2, sequence=7)
    with edgeagent.load_session(artifact) as session:
        assert np.isfinite(session.run(feeds)["logits"]).all()


def test_accuracy_control_reports_kept_layers(mlp_path, mlp_calibration, mlp_eval, tmp_path, ov_home):
    from edgeagent.backends.openvino import OpenVINOCompileOptions, Validation

    x, labels = mlp_eval
    validation = Validation([({"x": x[i:i + 1]}, labels[i:i + 1]) for i in range(200)])
    options = OpenVINOCompileOptions(int8="accuracy_control", max_drop=0.005, validation=validation, subset_size=64)
    artifact = edgeagent.compile(mlp_path, "openvino", "int8", calibration=mlp_calibration, options=options,
                                 out=tmp_path / "a")
    assert artifact.recipe["name"] == "accuracy_control" and artifact.recipe["max_drop"] == 0.005
    assert isinstance(artifact.manifest["evidence"]["kept_in_higher_precision"], list)
    with edgeagent.load_session(artifact) as session:
        accuracy = (session.run({"x": x})["logits"].argmax(1) == labels).mean()
    assert accuracy >= 0.97


def test_accuracy_control_without_validation_is_refused(mlp_path, mlp_calibration, tmp_path, ov_home):
    with pytest.raises(CalibrationError, match="validation"):
        edgeagent.compile(mlp_path, "openvino", "int8", calibration=mlp_calibration,
                          options={"int8": "accuracy_control"}, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_int8_without_calibration_is_refused(mlp_path, tmp_path, ov_home):
    with pytest.raises(CalibrationError, match="calibration"):
        edgeagent.compile(mlp_path, "openvino", "int8", out=tmp_path / "a")


def test_missing_device_lists_the_present_ones(mlp_path, tmp_path, ov_home):
    with pytest.raises(BackendUnavailable, match=r"present devices: \[.*CPU"):
        edgeagent.compile(mlp_path, "openvino", "fp32", options={"device": "NPU.7"}, out=tmp_path / "a")


def test_unconvertible_operator_is_named_with_its_node(tmp_path, ov_home):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
         helper.make_node("TotallyCustomOp", ["r"], ["y"], name="mystery_node", domain="com.example")],
        "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(UnsupportedModel) as info:
        edgeagent.compile(tmp_path / "custom.onnx", "openvino", "fp32", out=tmp_path / "a")
    assert "TotallyCustomOp" in str(info.value) and "mystery_node" in str(info.value)
    assert not (tmp_path / "a").exists()
