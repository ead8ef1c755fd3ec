"""Decoder IRs on TensorRT: the optimization profile over batch, sequence and past length, and
the weight-only graphs TensorRT builds INT4/INT8 engines from. Nothing here needs a GPU.

Profile: one profile spans both phases of generation, so a single engine serves the prefill
(many new tokens, no past) and each decode step (one token, a growing past): `input_ids` and
`position_ids` [1..max_batch, 1..max_prompt], `attention_mask` [1..max_batch, 1..max_length],
every `past_key_values.*` [1..max_batch, kv_heads, 0..max_length-1, head_dim] (TensorRT accepts
empty tensors, so the prefill's past of length 0 is inside the range). `opt` is a decode step at
half the context: where generation spends its time.

Weight-only graphs (TensorRT's documented WoQ pattern: a constant integer weight, a
DequantizeLinear into the float MatMul, a strongly typed network):

- int4: ONNX Runtime's `MatMulNBitsQuantizer` in QDQ format writes each MatMul weight as INT4
  blocks with one scale per `block_size` inputs, symmetric (TensorRT's IDequantizeLayer refuses
  INT4 zero points), opset 21. ONNX Runtime runs the same graph on the CPU, which is how its
  numerics are checked here.
- int8: NVIDIA ModelOpt (`modelopt.onnx.quantization.int4`, every MatMul listed in `layers_8bit`)
  writes INT8 blocks the same way; ONNX Runtime's quantizer has no 8-bit QDQ weight-only mode.
  ModelOpt is NVIDIA's tool for TensorRT-bound ONNX and installs with `pip install
  'nvidia-modelopt[onnx]'` on the GPU machine.

Unverified here: these machines have no NVIDIA GPU, so no engine was built from either graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from edgeagent.errors import BackendUnavailable, InputError, UnsupportedModel
from edgeagent.ir import ModelIR, TensorSpec

from .profiles import ShapeRange

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
WOQ_OPSET = 21  # DequantizeLinear's block_size attribute


def decoder_profile(inputs: Sequence[TensorSpec], metadata: Mapping[str, Any], *, max_batch: int,
                    max_prompt: int, max_length: int | None = None) -> dict[str, ShapeRange]:
    """One optimization profile for prefill and decode steps of a decoder of the contract.

    Args:
        inputs: the IR's inputs (input_ids, attention_mask, position_ids, past_key_values.*).
        metadata: ir.json or the ONNX metadata (num_kv_heads, head_dim, max_length).
        max_batch: rows per call at most.
        max_prompt: new tokens per call at most (the longest prompt, chunks of it, or a grammar's
            fast-forwarded run).
        max_length: positions at most (default the IR's max_length).

    Raises:
        UnsupportedModel: inputs that are not the decoder contract's, or metadata without heads.
        InputError: sizes below 1, or a prompt longer than the positions.
    """
    length = int(max_length or metadata.get("max_length") or 0)
    if max_batch < 1 or max_prompt < 1 or length < 2:
        raise InputError(f"decoder profile needs max_batch ≥ 1, max_prompt ≥ 1 and max_length ≥ 2, got "
                         f"{max_batch}, {max_prompt}, {length}", field="max_sequence")
    if max_prompt >= length:
        raise InputError(f"max_sequence {max_prompt} (new tokens per call) must be below the model's "
                         f"{length} positions", field="max_sequence")
    try:
        heads, head_dim = int(metadata["num_kv_heads"]), int(metadata["head_dim"])
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModel("the decoder's metadata lacks num_kv_heads or head_dim; export it again") from None
    names = {spec.name for spec in inputs}
    missing = [n for n in ("input_ids", "attention_mask", "position_ids") if n not in names]
    if missing or not any(_PAST.match(n) for n in names):
        raise UnsupportedModel(f"not a decoder of the contract: missing {missing or 'past_key_values.*'}")
    decode_past = length // 2
    profile: dict[str, ShapeRange] = {}
    for spec in inputs:
        if spec.name in ("input_ids", "position_ids"):
            profile[spec.name] = ShapeRange((1, 1), (1, 1), (max_batch, max_prompt))
        elif spec.name == "attention_mask":
            profile[spec.name] = ShapeRange((1, 1), (1, decode_past + 1), (max_batch, length))
        elif _PAST.match(spec.name):
            profile[spec.name] = ShapeRange((1, heads, 0, head_dim), (1, heads, decode_past, head_dim),
                                            (max_batch, heads, length - 1, head_dim))
        elif spec.name == "beam_idx":
            profile[spec.name] = ShapeRange((1,), (1,), (max_batch,))
        else:
            raise UnsupportedModel(f"decoder input {spec.name!r} is not part of the contract")
    return profile


def weight_only_graph(ir: ModelIR, bits: int, *, block_size: int = 128, lm_head: bool = True):
    """The IR's graph with MatMul weights as INT4 or INT8 blocks behind DequantizeLinear.

    Args:
        ir: the decoder IR's model.
        bits: 4 or 8.
        block_size: weights per scale along the input width (TensorRT's WoQ kernels: 64 or 128).
        lm_head: quantize the LM head too (default True); False keeps it float.

    Returns:
        (onnx.ModelProto, report) where report says what was quantized and what stayed float.

    Raises:
        InputError: bits other than 4 or 8, a block size TensorRT does not take.
        BackendUnavailable: int8 without NVIDIA ModelOpt installed.
    """
    if bits not in (4, 8):
        raise InputError(f"weight-only bits must be 4 or 8, got {bits}", field="precision")
    if block_size not in (64, 128):
        raise InputError(f"TensorRT's weight-only kernels take block_size 64 or 128, got {block_size}",
                         field="block_size")
    model = ir.proto()
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    initializers = {i.name for i in model.graph.initializer}
    weights = [n for n in matmuls if len(n.input) > 1 and n.input[1] in initializers]
    head = matmuls[-1].name if matmuls else None  # the exporter's last MatMul is the LM head
    exclude = [] if lm_head or head is None else [head]
    # A tied LM head that multiplies by the transposed embedding (a node's output, not a
    # constant) fits no weight-only kernel, so it stays float.
    computed = [head] if head is not None and head not in exclude and head not in {n.name for n in weights} else []
    if bits == 4:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)

        config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=4,
                                              quant_format=QuantFormat.QDQ)
        quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
        quantizer.process()
        graph = quantizer.model.model
        tool = "onnxruntime.quantization.MatMulNBitsQuantizer (QDQ, symmetric)"
    else:
        try:
            from modelopt.onnx.quantization.int4 import quantize as modelopt_quantize
        except ImportError:
            raise BackendUnavailable("TensorRT's int8 weight-only graph is written by NVIDIA ModelOpt: pip install "
                                     "'nvidia-modelopt[onnx]' (on the GPU machine), or compile int4") from None
        layers = ",".join(n.name for n in weights if n.name not in exclude)
        graph = modelopt_quantize(model, calibration_method="rtn_dq", block_size=block_size, use_zero_point=False,
                                  nodes_to_exclude=exclude, layers_8bit=layers, use_external_data_format=False,
                                  log_level="WARNING")
        tool = "nvidia-modelopt int4.quantize (rtn_dq, layers_8bit: every MatMul)"
    for opset in graph.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < WOQ_OPSET:
            opset.version = WOQ_OPSET
    dequantized = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    report = {"tool": tool, "weights": f"int{bits}", "block_size": block_size, "symmetric": True,
              "activations": "float32", "quantized_matmuls": len(dequantized),
              "kept_in_float": [{"node": name, "reason": "lm_head=false: the LM head stays float"}
                                for name in exclude]
              + [{"node": name, "reason": "the LM head's weight is computed (a tied embedding's "
                  "transpose), not a constant a weight-only kernel can hold"} for name in computed]}
    if not dequantized:
        raise UnsupportedModel("no MatMul weight was quantized: the graph has no MatMul with a constant weight")
    return graph, report
