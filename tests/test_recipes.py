"""INT8 with an accuracy check: a model with one fragile layer gets that layer kept in fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeagent.cli.main import main
from edgeagent.errors import UnsupportedModel
from edgeagent.recipes import int8_with_fallback
from edgeagent.workloads import NpzClassification
from tests import models


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    """The fitted MLP with named nodes and one huge weight in its first layer.

    Per-tensor INT8 scales to the outlier, so every other weight of that layer rounds to zero
    and accuracy collapses; keeping that MatMul in fp32 restores it exactly.
    """
    folder = tmp_path_factory.mktemp("fragile")
    proto = onnx.load(str(models.mlp_classifier(folder / "mlp.onnx")))
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type.lower()}_{i}"
    w1 = next(t for t in proto.graph.initializer if t.name == "w1")
    weights = numpy_helper.to_array(w1).copy()
    weights[0, 0] = 2000.0
    w1.CopyFrom(numpy_helper.from_array(weights, "w1"))
    path = folder / "fragile.onnx"
    onnx.save(proto, str(path))
    x, y = models.blobs(300, seed=2)
    x[:, 0] = 0.0  # the outlier weight's input is silent, so fp32 stays accurate
    np.savez(folder / "eval.npz", x=x, labels=y)
    return path, folder / "eval.npz"


def test_the_sensitive_node_is_found_and_kept_in_fp32(fragile, tmp_path):
    path, data = fragile
    workload = NpzClassification(data)
    artifact = int8_with_fallback(path, workload=workload, out=tmp_path / "a", options={"int8": "dynamic"},
                                  max_drop=0.01)
    check = artifact.manifest["int8_check"]
    assert check["fp32"]["accuracy"] >= 0.95 and check["drop"] > 0.2  # plain INT8 falls apart
    fallback = check["fallback"]
    assert fallback["nodes_kept_fp32"] == ["matmul_0"]  # the outlier's layer, ranked first
    assert fallback["node_errors"][0]["node"] == "matmul_0"
    assert fallback["node_errors"][0]["error"] > fallback["node_errors"][1]["error"]
    assert fallback["drop"] <= 0.01
    assert artifact.recipe["nodes_kept_fp32"] == ["matmul_0"]


def test_a_robust_model_needs_no_fallback(tmp_path):
    path = models.mlp_classifier(tmp_path / "mlp.onnx")
    data = models.blobs_eval_npz(tmp_path / "eval.npz")
    artifact = int8_with_fallback(path, workload=NpzClassification(data), out=tmp_path / "a",
                                  options={"int8": "dynamic"})
    assert artifact.manifest["int8_check"]["fallback"] is None


def test_an_impossible_budget_is_refused(fragile, tmp_path):
    path, data = fragile
    with pytest.raises(UnsupportedModel, match="use fp32"):
        int8_with_fallback(path, workload=NpzClassification(data), out=tmp_path / "a",
                           options={"int8": "dynamic"}, max_drop=-1.0)
    assert not (tmp_path / "a").exists()


def test_nodes_to_exclude_is_a_cli_option(fragile, tmp_path):
    path, data = fragile
    out = tmp_path / "kept"
    assert main(["compile", str(path), "--precision", "int8", "--option", "int8=dynamic",
                 "--option", "nodes_to_exclude=matmul_0", "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["recipe"]["nodes_kept_fp32"] == ["matmul_0"]
