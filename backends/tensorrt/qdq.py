"""The explicitly quantized (QDQ) ONNX graph TensorRT builds INT8 engines from (no GPU needed).

TensorRT 10 and later build INT8 from QuantizeLinear/DequantizeLinear pairs in a strongly typed
network, no longer from implicit calibrators. TensorRT's rules for those pairs: INT8 only,
zero point 0 (symmetric), activations per tensor, weights per output channel, standard ONNX
operators only. The graph is written by onnxruntime.quantization's static quantizer with those
settings and scales calibrated on the same `edgeagent.Dataset` that feeds every backend; only
the inputs of the linear operators TensorRT runs in INT8 (Conv, ConvTranspose, MatMul, Gemm) are
quantized, as NVIDIA's placement guidance recommends. Because it is a plain ONNX graph, ONNX
Runtime on a CPU runs it too, which is how its accuracy is checked here.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.data import Dataset
from edgeagent.errors import CalibrationError, UnsupportedModel
from edgeagent.ir import ModelIR

# Operators whose inputs TensorRT runs in INT8 when Q/DQ feed them.
TRT_INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Weight axis that is the output channel, per operator (Conv weights are [out, in, ...]).
_CHANNEL_AXIS = {"MatMul": 1, "Gemm": 1, "Conv": 0, "ConvTranspose": 1}


def prepare_qdq(ir: ModelIR, calibration: Dataset | None, *, calibration_size: int = 128, seed: int = 0,
                method: str = "minmax", op_types: Sequence[str] = TRT_INT8_OPS,
                nodes_to_exclude: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """Write the QDQ graph for `ir`, calibrated on `calibration`.

    Args:
        ir: the fp32 model.
        calibration: the Dataset whose samples set the activation scales.
        calibration_size: samples drawn from it (default 128).
        seed: the subset's seed (default 0).
        method: minmax, entropy or percentile (onnxruntime's calibrators; default minmax).
        op_types: operators whose inputs are quantized (default Conv, ConvTranspose, MatMul, Gemm).
        nodes_to_exclude: nodes kept in floating point.

    Returns:
        (the ONNX ModelProto, a summary: Q/DQ counts, per-channel weights, samples used).

    Raises:
        CalibrationError: no calibration data, or a Dataset that yields nothing.
        UnsupportedModel: the quantizer fails, or its graph breaks TensorRT's rules.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    from ..onnxruntime import calibration_reader, pre_process, quantize_static_checked

    if calibration is None:
        raise CalibrationError("TensorRT INT8 needs calibration data to set the QDQ scales: pass "
                               "calibration=Dataset(...) (CLI: --calibration FILE.npz)")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {sorted(methods)}")
    reader = calibration_reader(calibration.subset(calibration_size, seed=seed), [s.name for s in ir.inputs])
    with tempfile.TemporaryDirectory(prefix="edgeagent-trt-qdq-") as tmp:
        source, dest = Path(tmp) / "source.onnx", Path(tmp) / "qdq.onnx"
        onnx.save_model(ir.proto(), str(source))
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference only: ONNX Runtime's graph optimizations would add com.microsoft
            # operators that TensorRT's parser does not read.
            pre_process(source, prepared, skip_optimization=True)
        except Exception:  # symbolic shape inference does not cover every graph
            prepared = source
        quantize_static_checked(
            prepared, dest, reader, failure="writing the QDQ graph for TensorRT failed",
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
            calibrate_method=methods[method], op_types_to_quantize=list(op_types),
            nodes_to_exclude=list(nodes_to_exclude) or None,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                           "QuantizeBias": False,  # TensorRT reads float biases, not INT32 ones
                           # Inputs only: TensorRT fuses the output scale itself.
                           "OpTypesToExcludeOutputQuantization": list(op_types)})
        model = onnx.load(str(dest))
    summary = check_trt_qdq(model)
    summary["calibration_samples"] = reader.count
    summary["calibration_method"] = method
    return model, summary


def check_trt_qdq(model) -> dict[str, Any]:
    """Check a QDQ graph against TensorRT's rules; summarise it.

    Raises:
        UnsupportedModel: a non-standard operator domain, a zero point that is not INT8 zero, or
            weight scales that are not per output channel; the node is named.
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    constants = {out: node for node in model.graph.node if node.op_type == "Constant" for out in node.output}

    def value(name: str) -> np.ndarray | None:
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    counts = collections.Counter()
    per_channel = 0
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModel(f"node {node.name!r} ({node.op_type}) is in domain {node.domain!r}; TensorRT's "
                                   "ONNX parser reads standard operators only")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op_type] += 1
        zero_point = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and (zero_point.dtype != np.int8 or np.any(zero_point != 0)):
            raise UnsupportedModel(f"{node.op_type} {node.name!r} has zero point {zero_point.ravel()[:4]} "
                                   f"({zero_point.dtype}); TensorRT needs symmetric INT8 (zero point 0)")
        weight = value(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is not None and weight.dtype == np.int8:
            if weight.min(initial=0) < -127:
                raise UnsupportedModel(f"weights {node.input[0]!r} use -128; TensorRT's INT8 weights are in "
                                       "[-127, 127]")
            scale = value(node.input[1])
            users = consumers[node.output[0]]
            axis = next((_channel_axis(u) for u in users if u.op_type in _CHANNEL_AXIS), None)
            if scale is not None and scale.size > 1:
                attr = {a.name: a.i for a in node.attribute}.get("axis", 1)
                if axis is not None and attr % weight.ndim != axis % weight.ndim:
                    raise UnsupportedModel(f"weights {node.input[0]!r} are scaled along axis {attr}; TensorRT "
                                           f"needs the output-channel axis {axis} for {users[0].op_type}")
                per_channel += 1
    quantized = collections.Counter()
    for node in model.graph.node:
        if node.op_type in TRT_INT8_OPS and any(
                p.op_type == "DequantizeLinear" for name in node.input for p in _producers(model, name)):
            quantized[node.op_type] += 1
    return {"quantize_nodes": counts["QuantizeLinear"], "dequantize_nodes": counts["DequantizeLinear"],
            "per_channel_weights": per_channel, "quantized_ops": dict(sorted(quantized.items()))}


def _channel_axis(node) -> int:
    if node.op_type == "Gemm":  # B is [K, N], or [N, K] when transposed
        return 0 if {a.name: a.i for a in node.attribute}.get("transB", 0) else 1
    return _CHANNEL_AXIS[node.op_type]


def _producers(model, name: str):
    return [n for n in model.graph.node if name in n.output]
