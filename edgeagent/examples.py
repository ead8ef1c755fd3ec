"""Small example models that ship with edgeagent, so the main job runs from a wheel.

    edgeagent export edgeagent.examples:tiny_encoder --out encoder.onnx      # PyTorch (train extra)
    edgeagent export edgeagent.examples:tiny_classifier --out classifier.onnx  # ONNX graph, core only

`tiny_encoder` is a two-layer PyTorch TransformerEncoder over token ids (vocabulary 100,
dynamic batch and sequence), exported and parity-checked like any model. `tiny_classifier`
is an ONNX graph built in code (a fixed two-layer MLP over 32 features, dynamic batch) for
installs without torch. Both are deterministic; neither downloads anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

VOCAB = 100
FEATURES, HIDDEN, CLASSES = 32, 64, 10

ENCODER_EXPORT = {"input_names": ["input_ids"], "output_names": ["logits"],
                  "dynamic_axes": {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}}


def tiny_encoder() -> tuple[Any, tuple, dict[str, Any]]:
    """(module, example inputs, export settings) of a two-layer encoder classifying into 5 classes.

    Raises:
        InputError: torch is not installed (the train extra brings it).
    """
    try:
        import torch
    except ImportError:
        from .errors import InputError

        raise InputError("edgeagent.examples:tiny_encoder is a PyTorch model: pip install 'edgeagent[train]', "
                         "or export edgeagent.examples:tiny_classifier, which needs no torch") from None

    class TinyEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 32)
            layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(32, 5)

        def forward(self, input_ids):
            return self.head(self.encoder(self.embed(input_ids)).mean(dim=1))

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    return model, (torch.randint(0, VOCAB, (2, 12)),), dict(ENCODER_EXPORT)


def tiny_classifier():
    """An `onnx.ModelProto`: x [batch, 32] → ReLU layer → logits [batch, 10], fixed random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((FEATURES, HIDDEN)) / np.sqrt(FEATURES)).astype(np.float32)
    b1 = (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32)
    b2 = np.zeros(CLASSES, np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
             helper.make_node("Add", ["l0", "b2"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeagent.examples")
    model.ir_version = 8
    model.metadata_props.append(onnx.StringStringEntryProto(key="source", value="edgeagent.examples:tiny_classifier"))
    return model
