"""Model files (issue 19, defects 1, 4, 5, 12 and 13): what `edgeagent.load` and every artifact load
path refuse, with or without onnx's checker."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import edgeagent
from edgeagent.errors import ArtifactError, ModelRejected
from tests.security import hostile


def _outside_secret(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(16, 7, np.float32).tobytes())
    return secret


@pytest.mark.parametrize("full_check", [True, False])
def test_hardlinked_external_data_is_refused(tmp_path, full_check):
    """Defect 1: a data file hardlinked to a file outside the folder is never read, full check or not."""
    path = hostile.matmul_model(tmp_path / "model", write_data=False)
    os.link(_outside_secret(tmp_path), tmp_path / "model" / "weights.bin")
    with pytest.raises(ModelRejected, match="hard links"):
        edgeagent.load(path, full_check=full_check)


def test_hardlinked_external_data_in_an_artifact_is_refused(tmp_path):
    """Defect 1: the artifact load path (`run`, `serve`, bench) refuses it too, though the manifest hashes it."""
    source = hostile.matmul_model(tmp_path / "src", write_data=False)
    folder = hostile.hand_artifact(tmp_path / "art", {"model.onnx": source.read_bytes(),
                                                      "weights.bin": _outside_secret(tmp_path)})
    with pytest.raises(ModelRejected, match="hard links"):
        edgeagent.load_session(folder)


def test_backslash_location_is_refused_not_split(tmp_path):
    """Defect 4: `sub\\w.bin` was checked and hashed as sub/w.bin while the runtime opened `sub\\w.bin`."""
    path = hostile.matmul_model(tmp_path, location="sub\\w.bin", write_data=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(hostile.W.tobytes())
    (tmp_path / "sub\\w.bin").write_bytes(np.full(16, 9, np.float32).tobytes())  # what ORT would read
    for full_check in (True, False):
        with pytest.raises(ModelRejected, match="backslash"):
            edgeagent.load(path, full_check=full_check)


def test_external_data_the_manifest_does_not_list_is_refused(tmp_path):
    """Defect 5: every file a model in an artifact references must be listed (so hashed)."""
    source = hostile.matmul_model(tmp_path / "src")
    folder = hostile.hand_artifact(tmp_path / "art", {"model.onnx": source.read_bytes(),
                                                      "weights.bin": hostile.W.tobytes()})

    def unlist(manifest):
        del manifest["files"]["weights.bin"]
    hostile.rewrite_manifest(folder, unlist)
    (folder / "weights.bin").write_bytes(np.full(16, 5, np.float32).tobytes())  # unhashed, swapped
    with pytest.raises(ArtifactError, match="does not list"):
        edgeagent.load_session(folder)


def test_external_data_inside_a_function_body_is_checked(tmp_path):
    """Defect 13: the walker skipped tensors inside model-local function bodies."""
    _outside_secret(tmp_path)
    path = hostile.function_model(tmp_path / "model", "../secret.bin")
    with pytest.raises(ModelRejected, match="'..'"):
        edgeagent.load(path, full_check=False)


def test_a_200000_node_model_is_refused_before_any_work(tmp_path):
    """Defect 12: a node-count cap, checked right after parsing (not minutes into a compile)."""
    path = hostile.identity_model(tmp_path / "big.onnx", nodes=200_000)
    start = time.perf_counter()
    with pytest.raises(ModelRejected, match="200000 nodes, over the cap"):
        edgeagent.load(path, full_check=False)
    assert time.perf_counter() - start < 5
    assert edgeagent.load(hostile.identity_model(tmp_path / "small.onnx"), max_nodes=1).opset == 17


@pytest.mark.parametrize("opset", [999, 3])
def test_an_opset_no_runtime_runs_is_refused_before_compiling(tmp_path, opset):
    """Defect 12: opset 999 compiled into an artifact that could not be loaded."""
    path = hostile.identity_model(tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ModelRejected, match=f"opset {opset}"):
        edgeagent.load(path, full_check=False)
    with pytest.raises(ModelRejected, match=f"opset {opset}"):
        edgeagent.compile(path, "onnxruntime", "fp32", out=tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_a_fifo_model_does_not_hang(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ModelRejected, match="not a regular file"):
        edgeagent.load(fifo)


@pytest.mark.parametrize("raw", [hostile.deep_json(), f"[{hostile.huge_int()}]", "[1e999]", '{"a": 1}',
                                 '["a", ["b"]]'])
def test_hostile_labels_metadata_is_no_labels(tmp_path, raw):
    """Defect 13: `ModelIR.labels` raised on hostile metadata instead of returning None."""
    import onnx

    path = hostile.identity_model(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    proto.metadata_props.append(onnx.StringStringEntryProto(key="labels", value=raw))
    onnx.save_model(proto, str(path))
    assert edgeagent.load(path).labels is None


def _typed_identity(path, elem_type):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "typed",
                              [helper.make_tensor_value_info("x", elem_type, [1, 4])],
                              [helper.make_tensor_value_info("y", elem_type, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("full_check", [True, False])
def test_an_element_type_onnx_does_not_define_is_refused(tmp_path, full_check):
    """Defect 11: an unknown dtype was a ValueError: "internal error", exit 2."""
    path = _typed_identity(tmp_path / "m.onnx", 999)
    with pytest.raises(ModelRejected, match="999"):
        edgeagent.load(path, full_check=full_check)


def test_an_input_dtype_the_runtime_cannot_take_is_refused_at_compile(tmp_path):
    """Defect 11: a bfloat16 input compiled, then failed with ONNX Runtime's RuntimeError on every run."""
    from onnx import TensorProto

    from edgeagent.errors import UnsupportedModel

    path = _typed_identity(tmp_path / "m.onnx", TensorProto.BFLOAT16)
    with pytest.raises(UnsupportedModel, match="does not load or run here"):
        edgeagent.compile(path, "onnxruntime", "fp32", out=tmp_path / "art")
