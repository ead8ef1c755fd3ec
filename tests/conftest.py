"""Shared fixtures: tiny models built once per session (see tests/models.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests import models

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mlp_path(model_dir):
    return models.mlp_classifier(model_dir / "mlp.onnx")


@pytest.fixture(scope="session")
def conv_path(model_dir):
    return models.conv_net(model_dir / "conv.onnx")


@pytest.fixture(scope="session")
def trivial_path(model_dir):
    return models.trivial_model(model_dir / "trivial.onnx")


@pytest.fixture(scope="session")
def transformer_path(model_dir):
    if not HAS_TORCH:
        pytest.skip("the transformer model is exported from torch: install edgeagent[train]")
    return models.transformer_encoder(model_dir / "transformer.onnx")


@pytest.fixture(scope="session")
def mlp_eval():
    """Held-out blobs: (x, labels)."""
    return models.blobs(600, seed=2)


@pytest.fixture(scope="session")
def mlp_calibration(mlp_eval):
    import edgeagent

    x, _ = models.blobs(256, seed=3)
    return edgeagent.Dataset([{"x": x[i:i + 1]} for i in range(len(x))])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def agent_dir(tmp_path_factory):
    """A real (tiny) joint model, fine-tuned, exported and compiled into an agent folder."""
    if not HAS_TORCH:
        pytest.skip("building an agent needs torch: install edgeagent[train]")
    pytest.importorskip("hassil")
    return models.agent_folder(tmp_path_factory.mktemp("agent"))
