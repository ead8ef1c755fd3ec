"""edgeagent.load: what it accepts, and every unsafe file it refuses before a runtime parses it."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeagent
from edgeagent.errors import ModelRejected
from tests import models


def _external_model(folder, location="weights.bin", data=None, offset=None, length=None):
    """y = x · w with w (4×4 float32) stored as external data at `location`."""
    folder.mkdir(parents=True, exist_ok=True)
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    tensor = numpy_helper.from_array(w, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        tensor.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(model, str(path))
    if data is not False and not os.path.isabs(location) and ".." not in location:
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(w.tobytes() if data is None else data)
    return path


def test_load_reports_signature_and_metadata(mlp_path):
    ir = edgeagent.load(mlp_path)
    assert ir.inputs == (edgeagent.TensorSpec("x", "float32", ("batch", 32)),)
    assert ir.outputs[0].shape == ("batch", 10) and ir.outputs[0].is_dynamic
    assert ir.opset == 17 and ir.metadata["opset"] == "17"
    assert len(ir.sha256) == 64 and ir.metadata["sha256"] == ir.sha256
    assert ir.labels == [f"class_{i}" for i in range(10)]
    assert ir.metadata["source"] == "tests.models.mlp_classifier"


def test_load_accepts_a_folder_with_one_model(mlp_path, tmp_path):
    shutil.copy(mlp_path, tmp_path / "only.onnx")
    assert edgeagent.load(tmp_path).path.name == "only.onnx"


def test_valid_external_data_loads(tmp_path):
    ir = edgeagent.load(_external_model(tmp_path))
    assert ir.external_files == ("weights.bin",)
    assert ir.size_bytes > 64
    import onnxruntime as ort

    out = ort.InferenceSession(str(ir.path)).run(None, {"x": np.eye(4, dtype=np.float32)})[0]
    assert out[1, 0] == 4.0


def test_sha256_covers_external_data(tmp_path):
    path = _external_model(tmp_path)
    before = edgeagent.load(path).sha256
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[0] ^= 1
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert edgeagent.load(path).sha256 != before


@pytest.mark.parametrize("location, reason", [
    ("../outside.bin", "'..'"),
    ("sub/../../outside.bin", "'..'"),
    ("/etc/passwd", "absolute"),
    ("C:\\Windows\\system.ini", "absolute"),
    ("..\\outside.bin", "'..'"),
])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location, reason):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    path = _external_model(tmp_path / "model", location=location)
    with pytest.raises(ModelRejected) as info:
        edgeagent.load(path)
    assert reason in str(info.value)
    assert info.value.tensor == "w" and info.value.location == location


def test_external_data_symlink_file_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(16, np.float32).tobytes())
    path = _external_model(tmp_path / "model", data=False)
    os.symlink(secret, tmp_path / "model" / "weights.bin")
    with pytest.raises(ModelRejected, match="symlink"):
        edgeagent.load(path)


def test_external_data_through_symlinked_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(np.zeros(16, np.float32).tobytes())
    path = _external_model(tmp_path / "model", location="data/weights.bin", data=False)
    os.symlink(elsewhere, tmp_path / "model" / "data")
    with pytest.raises(ModelRejected, match="symlink"):
        edgeagent.load(path)


@pytest.mark.parametrize("offset, length, match", [
    (1000, None, "beyond"),
    (0, 4096, "beyond"),
    (32, 64, "beyond"),
    (0, 32, "does not match"),
    ("-5", None, "non-negative"),
    ("abc", None, "non-negative"),
])
def test_external_data_offsets_and_lengths_are_checked(tmp_path, offset, length, match):
    path = _external_model(tmp_path, offset=offset, length=length)
    with pytest.raises(ModelRejected, match=match):
        edgeagent.load(path)


def test_missing_external_data_file_is_refused(tmp_path):
    path = _external_model(tmp_path, data=False)
    with pytest.raises(ModelRejected, match="missing"):
        edgeagent.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelRejected, match="no such file"):
        edgeagent.load(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"this is not a protobuf \xff\xfe" * 10, b"", b"\x08"])
def test_malformed_protobuf_is_refused(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelRejected, match="malformed protobuf"):
        edgeagent.load(path)


def test_truncated_model_is_refused(mlp_path, tmp_path):
    data = mlp_path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelRejected):
        edgeagent.load(path)


def test_size_cap(mlp_path):
    with pytest.raises(ModelRejected, match="over the cap"):
        edgeagent.load(mlp_path, max_bytes=1000)


def test_checker_failure_is_refused(tmp_path):
    # A MatMul reading a tensor no one produces fails onnx.checker.
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "ghost"], ["y"])], "broken",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "broken.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelRejected, match="check_model"):
        edgeagent.load(path)


def test_full_check_catches_shape_errors(tmp_path):
    # Valid structure, inconsistent shapes: only full_check (shape inference) sees it.
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "shapes",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.zeros((5, 4), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "shapes.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelRejected, match="check_model"):
        edgeagent.load(path)


def test_save_is_atomic_and_merges_metadata(mlp_path, tmp_path):
    ir = edgeagent.load(mlp_path)
    saved = ir.save(tmp_path / "copy.onnx", metadata={"labels": '["a"]', "note": "hi"})
    assert saved.metadata["note"] == "hi" and saved.labels == ["a"]
    assert saved.metadata["source"] == "tests.models.mlp_classifier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.onnx"], "no temporary files remain"
    assert "sha256" not in {p.key for p in onnx.load(str(saved.path)).metadata_props}


def test_save_large_model_as_external_data(tmp_path):
    from edgeagent.ir import save_proto

    proto = onnx.load(str(models.mlp_classifier(tmp_path / "m.onnx")))
    saved = save_proto(proto, tmp_path / "out" / "ext.onnx", external_data=True)
    assert saved.external_files == ("ext.onnx.data",)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ext.onnx", "ext.onnx.data"]
