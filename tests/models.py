"""Tiny models built in code, each with what it checks. No file is downloaded.

- `mlp_classifier`: a fitted 2-layer MLP on Gaussian blobs (fixed feature dim, dynamic batch).
  Checks fp32 parity, INT8 top-1 agreement (its classes have real margins) and dynamic batch.
- `conv_net`: Conv → ReLU → global pool → Gemm on 3×16×16 images. Checks conv kernels and
  rank-4 inputs.
- `transformer_encoder`: a two-layer PyTorch TransformerEncoder over token ids, exported with
  dynamic batch and sequence through `edgeagent.export`. Checks attention graphs and symbolic
  dims. Needs torch.
- `trivial_model`: y = x + 1 on a [1, 4] input; isolates per-call overhead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeagent import examples

OPSET = 17
MLP_FEATURES, MLP_HIDDEN, MLP_CLASSES = 32, 64, 10


def _save(graph, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgeagent-tests")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: `n` samples of MLP_FEATURES dims in MLP_CLASSES classes."""
    rng = np.random.default_rng(1234)  # the class centres are fixed; `seed` draws the samples
    centres = rng.standard_normal((MLP_CLASSES, MLP_FEATURES)) * 2.0
    draw = np.random.default_rng(seed)
    labels = draw.integers(0, MLP_CLASSES, n)
    x = centres[labels] + draw.standard_normal((n, MLP_FEATURES)) * 0.8
    return x.astype(np.float32), labels.astype(np.int64)


def blobs_eval_npz(path: Path, n: int = 300, seed: int = 2) -> Path:
    """Held-out blobs as an `--eval` file for `mlp_classifier`: `x` and `labels`."""
    x, y = blobs(n, seed=seed)
    np.savez(path, x=x, labels=y)
    return path


def mlp_classifier(path: Path) -> Path:
    """A random ReLU layer with a ridge-regression readout fitted on blobs (≈100% accurate)."""
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((MLP_FEATURES, MLP_HIDDEN)) / np.sqrt(MLP_FEATURES)).astype(np.float32)
    b1 = (rng.standard_normal(MLP_HIDDEN) * 0.1).astype(np.float32)
    x, y = blobs(2000, seed=1)
    h = np.maximum(x @ w1 + b1, 0.0)
    h1 = np.hstack([h, np.ones((len(h), 1), np.float32)])
    targets = np.eye(MLP_CLASSES, dtype=np.float32)[y] * 4.0
    w2b = np.linalg.solve(h1.T @ h1 + 1e-2 * np.eye(h1.shape[1]), h1.T @ targets).astype(np.float32)
    w2, b2 = w2b[:-1], w2b[-1]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", MLP_FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", MLP_CLASSES])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    labels = "[" + ",".join(f'"class_{i}"' for i in range(MLP_CLASSES)) + "]"
    return _save(graph, path, {"labels": labels, "source": "tests.models.mlp_classifier"})


def conv_net(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((4, 8)) * 0.5).astype(np.float32)
    fcb = np.zeros(4, np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(fcb, "fcb")])
    return _save(graph, path)


def trivial_model(path: Path) -> Path:
    one = numpy_helper.from_array(np.ones((1, 4), np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "trivial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [one])
    return _save(graph, path)


# The tiny encoder ships with edgeagent (the README's main job exports it from a wheel).
TRANSFORMER_VOCAB = examples.VOCAB
TRANSFORMER_EXPORT = examples.ENCODER_EXPORT
torch_transformer = examples.tiny_encoder


def transformer_encoder(path: Path) -> Path:
    import edgeagent

    model, example, settings = torch_transformer()
    edgeagent.export(model, example, path, **settings)
    return path


def random_feeds(ir, batch: int = 2, sequence: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds matching `ir`'s signature (token ids below the tiny vocabulary)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in ir.inputs:
        shape = [batch if d == "batch" else sequence if isinstance(d, str) else d for d in spec.shape]
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            feeds[spec.name] = rng.integers(0, TRANSFORMER_VOCAB, shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def agent_folder(folder: Path) -> Path:
    """A real (tiny) joint intent + slot model, fine-tuned on ha-intents for a few seconds, exported
    and compiled (onnxruntime fp32 and dynamic int8) into an agent folder as `edgeagent demo` lays it out."""
    import edgeagent
    from edgeagent.agent.runtime import write_agent_folder
    from edgeagent.distill.workflow import export_model
    from edgeagent.workloads import ha_intents
    from tests.distill.test_distill import FAST, TASK, tiny_teacher

    workload = ha_intents.HAIntents(split="dev")
    train = workload.training_examples("train")[:1500]
    model = edgeagent.distill.finetune(tiny_teacher(train, workload.tokenizer), train, epochs=3, lr=3e-3, **FAST)
    path = export_model(TASK, model, folder / "model.onnx")
    agent = folder / "agent"
    edgeagent.compile(path, "onnxruntime", "fp32", out=agent / "onnxruntime-fp32")
    edgeagent.compile(path, "onnxruntime", "int8", options={"int8": "dynamic"}, out=agent / "onnxruntime-int8")
    return write_agent_folder(agent, TASK, tokenizer=workload.tokenizer_path)
