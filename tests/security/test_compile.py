"""Compiling (issue 19, defects 7 and 12): non-finite calibration data and the INT8 artifacts it made are
refused, and an artifact is loaded and run once before it is declared built."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgeagent
from edgeagent.errors import CalibrationError, UnsupportedModel
from tests import models


@pytest.fixture(scope="module")
def calibration():
    x, _ = models.blobs(16, seed=1)
    return [{"x": x[i:i + 1]} for i in range(len(x))]


@pytest.mark.parametrize("poison", [np.inf, -np.inf, np.nan])
def test_non_finite_calibration_samples_are_refused(mlp_path, calibration, tmp_path, poison):
    """Defect 7: Inf values gave -inf in 128 of 144 outputs, and exit 0."""
    bad = calibration[0]["x"].copy()
    bad[0, :3] = poison
    with pytest.raises(CalibrationError, match="sample 0 holds NaN or Inf in input 'x'"):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", calibration=[{"x": bad}, *calibration[1:]],
                          options={"int8": "static"}, out=tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_calibration_values_that_overflow_the_scales_are_refused(mlp_path, calibration, tmp_path):
    """Defect 7: finite values near 3e38 gave NaN scales and a NaN-answering artifact."""
    huge = [{"x": np.full((1, 32), 3e38, np.float32)}, *calibration[1:]]
    with pytest.raises(CalibrationError, match="overflow"):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", calibration=huge, options={"int8": "static"},
                          out=tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_an_artifact_that_does_not_load_is_never_declared_built(tmp_path):
    """Defect 12: valid ONNX that ONNX Runtime has no kernel for (Relu on int16) compiled into an artifact
    that every later load refused."""
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["y"])], "i16",
                              [helper.make_tensor_value_info("a", TensorProto.INT16, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT16, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "i16.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(UnsupportedModel, match="does not load or run here"):
        edgeagent.compile(path, "onnxruntime", "fp32", out=tmp_path / "art")
    assert not (tmp_path / "art").exists()
