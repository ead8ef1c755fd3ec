"""Hostile inputs built in code, shared by the security tests and the fuzz targets.

Each builder returns what an adversary would hand edgeagent: a model whose external data is a
hardlink or sits behind a backslash, a graph of 200,000 nodes, an artifact whose manifest lies,
JSON nested 200,000 deep. Nothing is downloaded and nothing leaves `tmp_path`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.arange(16, dtype=np.float32).reshape(4, 4)
DEEP = 200_000


def external_tensor(name: str, location: str, array: np.ndarray = W) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.append(onnx.StringStringEntryProto(key="location", value=location))
    return tensor


def matmul_model(folder: Path, location: str = "weights.bin", *, write_data: bool = True, opset: int = 17,
                 name: str = "model.onnx") -> Path:
    """y = x · w, w (4×4 float32) stored as external data at `location` (written unless told not to)."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [external_tensor("w", location)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = folder / name
    onnx.save_model(model, str(path))
    if write_data:
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        (folder / location).write_bytes(W.tobytes())
    return path


def function_model(folder: Path, location: str) -> Path:
    """A model whose only external tensor hides in a model-local function's Constant node."""
    folder.mkdir(parents=True, exist_ok=True)
    constant = helper.make_node("Constant", [], ["c"], value=external_tensor("c", location))
    body = helper.make_node("Add", ["x", "c"], ["y"])
    function = helper.make_function("local", "AddConst", ["x"], ["y"], [constant, body],
                                    opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("AddConst", ["x"], ["y"], domain="local")], "fn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(model, str(path))
    return path


def identity_model(path: Path, *, nodes: int = 1, opset: int = 17) -> Path:
    """x → Identity × `nodes` → y. Large counts repeat one node (invalid SSA, but caps come first)."""
    if nodes == 1:
        graph_nodes = [helper.make_node("Identity", ["x"], ["y"])]
    else:
        graph_nodes = [helper.make_node("Identity", ["x"], ["y"])] * nodes
    graph = helper.make_graph(graph_nodes, "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def hand_artifact(folder: Path, files: dict[str, bytes | Path], *, inputs=None, outputs=None) -> Path:
    """An onnxruntime artifact folder written by edgeagent's own `write_manifest`: `files` are
    written (bytes) or hardlinked (a Path) into it first."""
    from edgeagent.artifact import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            os.link(content, target)
        else:
            target.write_bytes(content)
    spec = {"name": "x", "dtype": "float32", "shape": ["n", 4]}
    write_manifest(folder, backend="onnxruntime", precision="fp32", recipe={"name": "fp32"}, source_sha256=None,
                   signature={"inputs": inputs or [spec], "outputs": outputs or [{**spec, "name": "y"}]},
                   sdk={}, capabilities={"batch_invariant": True, "int8_node_exclusion": True})
    return folder


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def huge_int(digits: int = 5000) -> str:
    return "9" * digits


def rewrite_manifest(folder: Path, change) -> None:
    """Apply `change(manifest_dict)` and write the manifest back (as an adversary editing it would)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    result = change(manifest)
    path.write_text(result if isinstance(result, str) else json.dumps(manifest))


def npz_with_members(path: Path, members: dict[str, bytes | tuple[dict, bytes]],
                     compression: int = 0) -> Path:
    """An .npz written member by member: raw bytes, or (an .npy header dict, the data after it) so
    a header can claim what the data is not."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            if isinstance(content, tuple):
                header, data = content
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                content = buffer.getvalue() + data
            archive.writestr(name, content)
    return path


def zip_bomb_npz(path: Path, *, mebibytes: int = 64) -> Path:
    """`mebibytes` of float32 zeros deflated to about a thousandth of that: a zip bomb in miniature,
    honest in every header."""
    import zipfile

    rows = mebibytes * 1024
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (rows, 256)})
            chunk = bytes(1 << 20)
            for _ in range(mebibytes):
                member.write(chunk)
    return path
