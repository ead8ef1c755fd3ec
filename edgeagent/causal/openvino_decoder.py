"""OpenVINO for decoders: the IR converted, made stateful, weights compressed by NNCF.

- `to_stateful_openvino(ir)`: `core.read_model` on model.onnx, then what optimum-intel's
  `patch_stateful_decoder` does: a `beam_idx` input whose Gather reorders the cache (beam
  search without touching state), `apply_make_stateful_transformation` (each
  past_key_values/present pair becomes a ReadValue/Assign variable), and a state initializer
  that starts every variable as `[batch, kv_heads, 0, head_dim]` zeros. The model then takes
  input_ids, attention_mask, position_ids and beam_idx and returns only logits; the cache stays
  in the plugin's memory between calls (`reset_state()` starts a new sequence).
- `compress_weights_openvino(model, options, dataset=...)`: `nncf.compress_weights` (INT8
  per channel; INT4 by groups, with ratio, group-size fallback, and the data-aware AWQ and
  scale estimation on prefill feeds of the workload's prompts), and a report read back from
  the compressed graph: each MatMul's precision and group size, or why it stayed float.
- `OVStatefulDecoder`: greedy decoding over a stateful model, for checks.

The OpenVINO CPU plugin defaults, on CPUs with AMX or AVX512-BF16, to bfloat16 compute and a
u8 KV cache; checks that compare with float32 ONNX pin `INFERENCE_PRECISION_HINT=f32` and
`KV_CACHE_PRECISION=f32` (see `F32_CONFIG`). Needs the `openvino` extra (openvino, nncf).
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError, UnsupportedModel
from . import parity

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
_QUANT_TYPES = {"u8": "uint8", "i8": "int8", "u4": "uint4", "i4": "int4", "nf4": "nf4"}


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailable("the OpenVINO decoder path needs the openvino extra: "
                                 "pip install -c constraints.txt 'edgeagent[openvino]'") from None
    return ov


class OVWeightMode(enum.StrEnum):
    INT8_ASYM = "int8_asym"
    INT8_SYM = "int8_sym"
    INT4_ASYM = "int4_asym"
    INT4_SYM = "int4_sym"


class GroupSizeFallback(enum.StrEnum):
    ADJUST = "adjust"  # largest power of two below group_size that divides the width
    IGNORE = "ignore"  # leave such weights to the backup precision
    ERROR = "error"


@dataclass(frozen=True)
class OVWeightOptions:
    """Settings of `nncf.compress_weights` for a decoder.

    Attributes:
        mode: int8_asym, int8_sym (per output channel), int4_asym or int4_sym (by groups)
            (default int4_asym, optimum-intel's INT4 default).
        group_size: weights per INT4 scale along the input width (default 128; ignored for
            INT8, which is per channel).
        ratio: share of the INT4-eligible weights in INT4, the rest in the backup INT8
            (default 1.0; below 1, NNCF ranks layers by sensitivity).
        group_size_fallback: a width the group size does not divide: adjust (a smaller power
            of two), ignore (backup precision) or error (default adjust).
        all_layers: INT4 for the embedding and LM head too (default False: NNCF keeps them
            INT8, as optimum-intel does).
        awq: activation-aware scaling, data-aware (default False).
        scale_estimation: data-aware scale search (default False).
        subset_size: calibration samples for data-aware methods (default 32).
    """

    mode: OVWeightMode = OVWeightMode.INT4_ASYM
    group_size: int = 128
    ratio: float = 1.0
    group_size_fallback: GroupSizeFallback = GroupSizeFallback.ADJUST
    all_layers: bool = False
    awq: bool = False
    scale_estimation: bool = False
    subset_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", OVWeightMode(self.mode))
        object.__setattr__(self, "group_size_fallback", GroupSizeFallback(self.group_size_fallback))
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise InputError(f"group_size must be a positive integer, got {self.group_size!r}",
                             field="group_size")
        if not 0.0 < float(self.ratio) <= 1.0:
            raise InputError(f"ratio must be in (0, 1], got {self.ratio!r}", field="ratio")
        if not self.is_int4 and (self.ratio != 1.0 or self.awq or self.scale_estimation or self.all_layers):
            raise InputError("ratio, all_layers, awq and scale_estimation apply to INT4 modes only; "
                             f"mode is {self.mode}", field="mode")
        if self.subset_size < 1:
            raise InputError(f"subset_size must be ≥ 1, got {self.subset_size}", field="subset_size")

    @property
    def is_int4(self) -> bool:
        return self.mode in (OVWeightMode.INT4_ASYM, OVWeightMode.INT4_SYM)

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation


@dataclass(frozen=True)
class OVCompressedWeight:
    """One MatMul or Gather weight after compression."""

    node: str
    module: str
    k: int
    n: int
    precision: str  # int4, uint4, int8, uint8 or float32
    group_size: int | None  # None: one scale per output channel
    reason: str | None = None


@dataclass(frozen=True)
class OVCompressionReport:
    """What `compress_weights_openvino` did; `to_json()` goes into the artifact manifest."""

    options: OVWeightOptions
    weights: tuple[OVCompressedWeight, ...]
    calibration_samples: int

    @property
    def compressed(self) -> tuple[OVCompressedWeight, ...]:
        return tuple(w for w in self.weights if w.precision != "float32")

    @property
    def kept(self) -> tuple[OVCompressedWeight, ...]:
        return tuple(w for w in self.weights if w.precision == "float32")

    def to_json(self) -> dict[str, Any]:
        opts = {k: str(v) if isinstance(v, enum.Enum) else v for k, v in asdict(self.options).items()}
        counts: dict[str, int] = {}
        for w in self.weights:
            counts[w.precision] = counts.get(w.precision, 0) + 1
        return {"recipe": "weight-only", "compressor": "nncf.compress_weights", "options": opts,
                "calibration_samples": self.calibration_samples, "precisions": counts,
                "compressed": [asdict(w) for w in self.compressed],
                "kept_in_float": [asdict(w) for w in self.kept]}


def to_stateful_openvino(model_path: str | os.PathLike, num_layers: int):
    """Convert a decoder IR's model.onnx into a stateful `openvino.Model`.

    Args:
        model_path: the IR's model.onnx (already checked by `edgeagent.load`).
        num_layers: decoder layers (the IR's metadata).

    Raises:
        UnsupportedModel: the model lacks the contract's cache inputs or outputs.
    """
    ov = _ov()
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    model = ov.Core().read_model(str(model_path))
    past, present = parity.kv_names(num_layers)
    names_in = {n for port in model.inputs for n in port.get_names()}
    names_out = {n for port in model.outputs for n in port.get_names()}
    missing = [n for n in past if n not in names_in] + [n for n in present if n not in names_out]
    if missing or "input_ids" not in names_in:
        raise UnsupportedModel(f"{model_path} is not a decoder IR: missing {missing[:4] or ['input_ids']}")
    batch = model.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    model.add_parameters([beam_idx])
    for name in past:
        port = model.input(name)
        consumers = port.get_target_inputs()
        reordered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, dict(zip(past, present)))
    # Each variable starts as zeros of [batch, kv_heads, 0, head_dim], batch taken from input_ids.
    batch_size = opset13.gather(opset13.shape_of(model.input("input_ids"), output_type="i64"),
                                opset13.constant([0]), opset13.constant(0))
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims: list[Any] = [d.min_length for d in list(op.get_output_partial_shape(0))]
            dims[0] = batch_size
            parts = [opset13.constant(np.array([d], np.int64)) if isinstance(d, int) else d for d in dims]
            zeros = opset13.broadcast(opset13.constant(0.0, dtype=op.get_output_element_type(0)),
                                      opset13.concat(parts, axis=0))
            op.set_arguments([zeros])
    model.validate_nodes_and_infer_types()
    return model


def prefill_feeds(token_lists: Iterable[Sequence[int]]) -> list[dict[str, np.ndarray]]:
    """One stateful-model feed per prompt (batch 1, empty cache): calibration for NNCF."""
    feeds = []
    for tokens in token_lists:
        ids = np.asarray([list(tokens)], np.int64)
        mask = np.ones_like(ids)
        feeds.append({"input_ids": ids, "attention_mask": mask, "position_ids": parity.position_ids(mask),
                      "beam_idx": np.zeros(1, np.int32)})
    return feeds


def compress_weights_openvino(model, options: OVWeightOptions = OVWeightOptions(), *,
                              dataset: Sequence[dict[str, np.ndarray]] | None = None,
                              onnx_path: str | os.PathLike | None = None):
    """Compress a (stateful) decoder's weights with `nncf.compress_weights`; return (model, report).

    Args:
        model: an `openvino.Model` (from `to_stateful_openvino`); compressed in place.
        options: `OVWeightOptions` (default INT4 asymmetric, group 128, ratio 1).
        dataset: feeds for data-aware methods (see `prefill_feeds`); required when
            `options.awq` or `options.scale_estimation`.
        onnx_path: the IR's model.onnx, to name each weight by its torch module in the report.

    Raises:
        InputError: a data-aware method without a dataset.
        BackendUnavailable: nncf is missing.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedCompressionParameters,
                                                           GroupSizeFallbackMode)
    except ImportError:
        raise BackendUnavailable("weight compression needs nncf: pip install -c constraints.txt "
                                 "'edgeagent[openvino]'") from None
    if options.data_aware and not dataset:
        raise InputError("awq and scale_estimation need calibration prompts; pass dataset= "
                         "(prefill_feeds of the workload's prompts)", field="dataset")
    kwargs: dict[str, Any] = {"mode": nncf.CompressWeightsMode(str(options.mode))}
    if options.is_int4:
        kwargs.update(group_size=options.group_size, ratio=options.ratio, all_layers=options.all_layers,
                      advanced_parameters=AdvancedCompressionParameters(
                          group_size_fallback_mode=GroupSizeFallbackMode(str(options.group_size_fallback))))
        if options.data_aware:
            kwargs.update(awq=options.awq, scale_estimation=options.scale_estimation)

    samples = 0
    if dataset and (options.data_aware or (options.is_int4 and options.ratio < 1.0)):
        items = list(dataset)[:options.subset_size]
        samples = len(items)
        kwargs.update(dataset=nncf.Dataset(items), subset_size=samples)
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        compressed = nncf.compress_weights(model, **kwargs)
    finally:
        nncf_logger.setLevel(level)
    modules = _onnx_modules(onnx_path) if onnx_path else {}
    return compressed, OVCompressionReport(options, tuple(_read_weights(compressed, modules, options)), samples)


def _onnx_modules(onnx_path) -> dict[str, str]:
    """ONNX output tensor name → torch module path, for naming OpenVINO ops in reports."""
    import onnx

    from .quantize_ort import _module_path

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {out: _module_path(node) for node in proto.graph.node
            if node.op_type in ("MatMul", "Gather") for out in node.output}


def _read_weights(model, modules: dict[str, str], options: OVWeightOptions) -> list[OVCompressedWeight]:
    """Walk each MatMul/Gather's weight input back to its Constant: the constant's element
    type is the stored precision; in a grouped weight the axis where the scale is 1 holds one
    group."""
    rows = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("MatMul", "Gather"):
            continue
        found = _trace_weight(op.input_value(1 if kind == "MatMul" else 0).get_node())
        if found is None:
            continue
        precision, weight_shape, scale_shape = found
        names = list(op.output(0).get_names())
        module = next((modules[n] for n in names if n in modules), "") or ("embedding" if kind == "Gather" else "")
        size = int(np.prod(weight_shape)) if weight_shape else 0
        if kind == "Gather":
            n, k = (weight_shape[0], size // weight_shape[0]) if weight_shape else (0, 0)
        else:  # N from the output (static: a hidden width or the vocabulary), K from the size
            n = _static_last(op.output(0))
            k = size // n if n else 0
        group = None
        if len(weight_shape) == 3 and scale_shape and len(scale_shape) == 3:
            axis = next((a for a in (2, 1) if scale_shape[a] == 1 and weight_shape[a] > 1), None)
            group = weight_shape[axis] if axis is not None else None
        reason = None
        if precision == "float32":
            reason = "not compressed by NNCF in this mode"
            if options.is_int4 and k and k % options.group_size and \
                    options.group_size_fallback != GroupSizeFallback.ADJUST:
                reason = (f"K={k} is not a multiple of group_size {options.group_size} "
                          "(group_size_fallback=ignore)")
        elif options.is_int4 and precision in ("int8", "uint8"):
            if k and k % options.group_size and options.group_size_fallback != GroupSizeFallback.ADJUST:
                reason = f"K={k} is not a multiple of group_size {options.group_size}: backup INT8"
            elif kind == "Gather" or module in ("lm_head", "embedding") or "embed" in module:
                reason = "embedding or LM head: NNCF's backup INT8 unless all_layers=true"
            elif options.ratio < 1.0:
                reason = f"ratio {options.ratio}: ranked sensitive, backup INT8"
            else:
                reason = "NNCF's backup INT8"
        rows.append(OVCompressedWeight(op.get_friendly_name(), module, k, n, precision, group, reason))
    return rows


def _static_last(output) -> int:
    shape = output.get_partial_shape()
    last = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
    return int(last.get_length()) if last is not None and last.is_static else 0


def _trace_weight(node, depth: int = 0):
    """(precision, weight shape, scale shape) for a constant-weight subgraph, else None."""
    if depth > 8:
        return None
    kind = node.get_type_name()
    if kind == "Constant":
        et = node.get_output_element_type(0).get_type_name()
        shape = [int(d) for d in node.get_output_shape(0)]
        if et in ("f32", "f16", "bf16"):
            return {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[et], shape, None
        if et in _QUANT_TYPES:
            return _QUANT_TYPES[et], shape, None
        return None
    if kind in ("Convert", "Reshape", "Transpose", "Subtract", "Multiply"):
        found = _trace_weight(node.input_value(0).get_node(), depth + 1)
        if found is not None and kind == "Multiply" and found[2] is None and \
                found[0] not in ("float32", "float16", "bfloat16"):
            scale = node.input_value(1).get_partial_shape()
            return found[0], found[1], [int(d.get_length()) for d in scale] if scale.is_static else None
        return found
    return None


class OVStatefulDecoder:
    """Greedy decoding over a stateful OpenVINO decoder (the cache stays in the plugin).

    Args:
        model: an `openvino.Model` from `to_stateful_openvino` (compressed or not), or a path
            to a saved one.
        config: compile properties (default `F32_CONFIG`, float32 compute and cache).
        device: OpenVINO device (default CPU).
    """

    def __init__(self, model, config: dict[str, str] | None = None, device: str = "CPU") -> None:
        ov = _ov()
        core = ov.Core()
        source = core.read_model(str(model)) if isinstance(model, (str, os.PathLike)) else model
        self.compiled = core.compile_model(source, device, dict(F32_CONFIG if config is None else config))
        self.request = self.compiled.create_infer_request()
        self._logits = self.compiled.output("logits")

    def step(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        beam = np.arange(ids.shape[0], dtype=np.int32)
        out = self.request.infer({"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                  "beam_idx": beam})
        return np.asarray(out[self._logits])

    def greedy(self, prompt: Sequence[int], n_tokens: int) -> list[int]:
        """Greedy-decode `n_tokens` after `prompt` (batch 1, no stop), from a reset state."""
        self.request.reset_state()
        ids = np.asarray([list(prompt)], np.int64)
        mask = np.ones_like(ids)
        pos = parity.position_ids(mask)
        tokens = []
        for _ in range(n_tokens):
            token = int(self.step(ids, mask, pos)[0, -1].argmax())
            tokens.append(token)
            ids = np.asarray([[token]], np.int64)
            mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
            pos = pos[:, -1:] + 1
        return tokens
