"""Compressed models save, load, export and compile like any student, and say how they were made."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")

import edgeagent  # noqa: E402
from edgeagent.distill import load_joint, save_joint  # noqa: E402
from edgeagent.distill.workflow import export_model  # noqa: E402

from . import tiny  # noqa: E402
from .test_prune import outputs  # noqa: E402

pytestmark = pytest.mark.torch
RECIPE = dict(prune={"heads": 0.5, "ffn": 0.5, "layers": 0.34, "positions": 64},
              low_rank={"embeddings": 24, "ffn_out": 16})


def initializer_elements(path) -> dict[str, int]:
    model = onnx.load(str(path))
    return {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}


@pytest.fixture(scope="module")
def compressed():
    model = tiny.joint("compact")
    return model, edgeagent.compress(model, data=tiny.examples(), **RECIPE)


@pytest.mark.parametrize("kind", ["compact", "bert"])
def test_save_and_load_rebuild_the_pruned_and_factorised_shapes(tmp_path, kind):
    model = tiny.joint(kind)
    out = edgeagent.compress(model, data=tiny.examples(), **RECIPE)
    folder = save_joint(out, tmp_path / "small", labels={"name": "x"})
    config = json.loads((folder / "config.json").read_text())
    assert config["compression"]["structure"]["layers"] == [{"heads": 2, "ffn": 64}] * 2
    assert config["encoder"]["num_hidden_layers"] == 2 and config["encoder"]["max_position_embeddings"] == 64
    loaded = load_joint(folder)
    assert loaded.compression["recipe"]["low_rank"] == {"embeddings": 24, "ffn_out": 16}
    data = tiny.examples(6, seed=3)
    for a, b in zip(outputs(out, data), outputs(loaded, data)):
        np.testing.assert_allclose(a, b, atol=1e-6)  # BertModel may reload with another attention kernel
    # Saved again after loading: the same folder contents.
    again = save_joint(loaded, tmp_path / "again", labels={"name": "x"})
    assert json.loads((again / "config.json").read_text())["compression"] == config["compression"]


def test_exported_onnx_has_smaller_initializers_and_carries_the_recipe(tmp_path, compressed):
    model, out = compressed
    task = tiny.task()
    base = initializer_elements(export_model(task, model, tmp_path / "base.onnx"))
    small_path = export_model(task, out, tmp_path / "small.onnx")
    small = initializer_elements(small_path)
    assert sum(small.values()) < 0.5 * sum(base.values())
    # No 64 × 128 FFN matrix and no 1,200 × 64 embedding table survive; the factors are there instead.
    assert 128 * 64 in base.values() and 1200 * 64 in base.values() and 512 * 64 in base.values()
    assert 128 * 64 not in small.values() and 1200 * 64 not in small.values() and 1200 * 24 in small.values()
    assert 512 * 64 not in small.values() and 64 * 64 in small.values()  # 64 position rows kept
    ir = edgeagent.load(small_path)
    recorded = json.loads(ir.metadata["compression"])
    assert recorded["recipe"]["prune"]["heads"] == 0.5 and recorded["structure"]["low_rank"]
    # The ONNX file reproduces PyTorch (export's parity check passed) and so does an INT8 artifact's
    # model file keep the recipe.
    artifact = edgeagent.compile(ir, "onnxruntime", "int8", options={"int8": "dynamic", "per_channel": True},
                                 out=tmp_path / "int8")
    compiled = [p for p in artifact.path.iterdir() if p.suffix == ".onnx"]
    assert compiled and "compression" in {p.key for p in onnx.load(str(compiled[0])).metadata_props}


def test_fused_attention_with_pruned_heads_matches_pytorch(tmp_path, compressed):
    """ONNX Runtime's attention fusion must read the pruned head count, not the hidden width's."""
    _, out = compressed
    path = export_model(tiny.task(), out, tmp_path / "small.onnx")
    artifact = edgeagent.compile(path, "onnxruntime", "fp32", out=tmp_path / "fp32")
    data = tiny.examples(4, seed=5)
    expected = outputs(out, data)
    with edgeagent.load_session(artifact) as session:
        for example, intent in zip(data, expected[0]):
            feeds = {"input_ids": example["input_ids"][None], "attention_mask": example["attention_mask"][None]}
            got = session.run(feeds)
            np.testing.assert_allclose(got["intent_logits"][0], intent, atol=1e-4)
    assert artifact.recipe.get("fusions", {}).get("applied") in (True, False)
