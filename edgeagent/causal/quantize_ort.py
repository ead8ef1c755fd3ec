"""Weight-only INT4/INT8 for ONNX Runtime: MatMulNBits through onnxruntime.quantization.

`quantize_weights_ort(ir, out, options)` rewrites every MatMul with a constant weight into
com.microsoft MatMulNBits (block-wise scales, optional zero points) with
`onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`, and returns a report
of what was quantized and what stayed in float32 and why. The result uses contrib operators:
it is an ONNX Runtime artifact file, not a decoder IR.

Two things the quantizer does not do on its own, handled here:

- A tied LM head is `MatMul(hidden, Transpose(embedding))`: its weight is not a constant, so
  the quantizer skips it and the biggest matrix of a small model stays float32. With
  `lm_head=int4|int8` the head gets its own transposed copy (the float32 embedding stays for
  the Gather, or becomes GatherBlockQuantized with `embeddings="int4"`, which then reads the
  INT4 head's own blocks where the head is symmetric INT4: one table, as onnxruntime-genai's
  builder writes).
- `accuracy_level`: without it, an INT4 MatMulNBits dequantizes to float32 on every call on
  CPU and is slower than float32 (onnxruntime issues #19707, #21525); level 4 computes with
  int8 activations, which is what makes INT4 fast. The default here is 4.

Needs onnxruntime (a core dependency); nothing else.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UnsupportedModel
from ..ir import ModelIR, load, save_proto

ACCURACY_LEVELS = {0: "unset (ONNX Runtime picks; float32 on CPU)", 1: "float32", 2: "float16",
                   3: "bfloat16", 4: "int8"}


class ZeroPoints(enum.StrEnum):
    """How an asymmetric block (symmetric=False) stores its offset."""

    INTEGER = "integer"  # onnxruntime's quantizer: a 4/8-bit zero point per block
    # Exact min..max blocks (see minmax_blocks). FLOAT puts float zero points in MatMulNBits,
    # which ONNX Runtime 1.32's CPU kernels run on a slow path; OFFSET stores unsigned levels
    # with zero point 0 and adds the blocks' minima as a small extra MatMul on per-block sums of
    # the input, which keeps the fast int8-compute kernels.
    FLOAT = "float"
    OFFSET = "offset"


class WeightPrecision(enum.StrEnum):
    FP32 = "fp32"
    INT8 = "int8"
    INT4 = "int4"


@dataclass(frozen=True)
class OrtWeightOnlyOptions:
    """Settings of ONNX Runtime weight-only quantization.

    Attributes:
        bits: 4 or 8 (default 4).
        block_size: weights per scale along K, a power of two ≥ 16 (default 32, as
            onnxruntime-genai's builder uses for CPU).
        symmetric: no zero points (default True).
        accuracy_level: MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8
            (default 4; see the module docstring for why).
        lm_head: the LM head's precision: fp32, int8 or int4 (default None: the same as bits).
        embeddings: the token embedding Gather: fp32, or int4 as GatherBlockQuantized
            (default fp32: INT4 embeddings also shrink the file; ONNX Runtime has no INT8 form).
        pad_partial_blocks: quantize a MatMul whose K is not a multiple of block_size by
            zero-padding its last block (default True); False keeps it in float32.
        exclude: node names (or module paths, e.g. model.layers.0.mlp.down_proj) to keep in
            float32 (default none).
        zero_points: with symmetric=False, integer (the ORT quantizer's), float or offset
            (default integer). float and offset make each block span exactly its min..max: weights
            already on such a 4-bit grid — a GGUF's Q4_1 tensors, dequantized — come back exactly,
            where an integer zero point re-quantizes them. offset also keeps ONNX Runtime's fast
            kernels (see ZeroPoints). 4-bit only; an INT8 head is then symmetric (GGUF's Q8_0).
    """

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    lm_head: WeightPrecision | None = None
    embeddings: WeightPrecision = WeightPrecision.FP32
    pad_partial_blocks: bool = True
    exclude: tuple[str, ...] = ()
    zero_points: ZeroPoints = ZeroPoints.INTEGER

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise InputError(f"bits must be 4 or 8, got {self.bits!r}", field="bits")
        if not isinstance(self.block_size, int) or self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(f"block_size must be a power of two ≥ 16, got {self.block_size!r}",
                             field="block_size")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise InputError(f"accuracy_level must be one of {sorted(ACCURACY_LEVELS)} "
                             f"({ACCURACY_LEVELS}), got {self.accuracy_level!r}", field="accuracy_level")
        object.__setattr__(self, "lm_head", None if self.lm_head is None else WeightPrecision(self.lm_head))
        object.__setattr__(self, "embeddings", WeightPrecision(self.embeddings))
        if self.embeddings == WeightPrecision.INT8:
            raise InputError("embeddings may be fp32 or int4: ONNX Runtime's GatherBlockQuantized "
                             "has no 8-bit form", field="embeddings")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "zero_points", ZeroPoints(self.zero_points))
        if self.exact_grid and self.symmetric:
            raise InputError(f"zero_points={self.zero_points} needs symmetric=False (a symmetric "
                             "block has no zero point)", field="zero_points")
        if self.exact_grid and self.bits != 4:
            raise InputError(f"zero_points={self.zero_points} is for bits=4: ONNX Runtime's CPU "
                             "MatMulNBits refuses 8-bit weights with float zero points",
                             field="zero_points")

    @property
    def exact_grid(self) -> bool:
        """Blocks spanning exactly their min..max (zero_points float or offset)."""
        return self.zero_points != ZeroPoints.INTEGER

    @property
    def head_precision(self) -> WeightPrecision:
        return self.lm_head or WeightPrecision(f"int{self.bits}")


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight in the result: node, module path, K×N, precision, and the reason if float32."""

    node: str
    module: str
    k: int
    n: int
    precision: str
    block_size: int | None = None
    padded: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class WeightOnlyReport:
    """What `quantize_weights_ort` did; `to_json()` goes into the artifact manifest."""

    options: OrtWeightOnlyOptions
    quantized: tuple[QuantizedWeight, ...]
    kept: tuple[QuantizedWeight, ...]
    bytes_before: int
    bytes_after: int
    path: Path = field(default=Path())

    def to_json(self) -> dict[str, Any]:
        opts = {k: (str(v) if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self.options).items()}
        opts["lm_head"] = str(self.options.head_precision)
        quantizer = {ZeroPoints.FLOAT: "edgeagent min/max blocks, float zero points (MatMulNBits)",
                     ZeroPoints.OFFSET: "edgeagent min/max blocks, zero point 8 + per-block offset MatMul",
                     }.get(self.options.zero_points, "onnxruntime MatMulNBitsQuantizer (DEFAULT/RTN)")
        return {"recipe": "weight-only", "quantizer": quantizer,
                "options": opts, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "quantized": [asdict(q) for q in self.quantized],
                "kept_in_float32": [asdict(q) for q in self.kept]}


def quantize_weights_ort(ir: ModelIR | str | os.PathLike, out: str | os.PathLike,
                         options: OrtWeightOnlyOptions = OrtWeightOnlyOptions(), *,
                         external_data: bool | None = None) -> WeightOnlyReport:
    """Quantize a decoder's MatMul weights to INT4/INT8 MatMulNBits; write OUT; report.

    Args:
        ir: the decoder's model.onnx, a ModelIR or a path (loaded through `edgeagent.load`).
        out: the `.onnx` file to write (atomically, contrib ops inside).
        options: `OrtWeightOnlyOptions` (default INT4, block 32, symmetric, accuracy_level 4).
        external_data: write the weights to `<out>.data` beside OUT (default None: only past
            protobuf's 2 GiB limit).

    Returns:
        The WeightOnlyReport: each weight quantized (K, N, precision, block, padded) and each
        kept in float32 with its reason; file sizes before and after.

    Raises:
        UnsupportedModel: the graph has no `logits` output produced by a MatMul.
        ModelRejected: the input or the written file fails `edgeagent.load`.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model_ir = ir if isinstance(ir, ModelIR) else load(ir)
    proto = onnx.load(str(model_ir.path))
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    weights = {n.name: _weight_of(n, inits, producers) for n in graph.node if n.op_type == "MatMul"}
    weights = {name: w for name, w in weights.items() if w is not None}
    head = _lm_head(graph, producers)
    modules = {n.name: _module_path(n) for n in graph.node}
    kept: list[QuantizedWeight] = []
    excluded: set[str] = set()

    def keep(name: str, reason: str) -> None:
        k, n = weights[name][1]
        kept.append(QuantizedWeight(name, modules.get(name, ""), k, n, "fp32", reason=reason))
        excluded.add(name)

    head_precision = options.head_precision
    tied_embedding = (weights[head.name][2] if head is not None and head.name in weights
                      and weights[head.name][0] == "tied" else None)
    if tied_embedding is not None:
        if head_precision != WeightPrecision.FP32:
            _untie_head(proto, head, weights[head.name][2])
            weights[head.name] = ("constant", weights[head.name][1], head.input[1])
    for name, (kind, (k, n), _) in weights.items():
        if head is not None and name == head.name and head_precision == WeightPrecision.FP32:
            keep(name, "lm_head=fp32")
        elif kind == "tied":
            keep(name, "weight is shared with the embedding (tied)")
        elif name in options.exclude or modules.get(name) in options.exclude:
            keep(name, "excluded by option")
        elif k % options.block_size and not options.pad_partial_blocks:
            keep(name, f"K={k} is not a multiple of block_size {options.block_size} "
                       "(pad_partial_blocks=false)")
    body = [n for n in weights if n not in excluded and (head is None or n != head.name)]
    passes: list[tuple[int, list[str]]] = []
    if body:
        passes.append((options.bits, body))
    if head is not None and head.name in weights and head.name not in excluded:
        passes.append((int(head_precision.removeprefix("int")), [head.name]))
    quant_logger = logging.getLogger("onnxruntime.quantization")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)
    try:
        for bits, names in passes:
            if options.exact_grid and bits == 4:  # an INT8 head takes the integer path
                _quantize_exact_grid(proto, names, bits, options)
                continue
            # With float zero points the INT8 head is symmetric: CPU MatMulNBits has no 8-bit float
            # zero points, and symmetric int8 blocks are what a GGUF's Q8_0 embedding already is.
            symmetric = options.symmetric or (options.exact_grid and bits == 8)
            quantizer = MatMulNBitsQuantizer(proto, bits=bits, block_size=options.block_size,
                                             is_symmetric=symmetric,
                                             accuracy_level=options.accuracy_level,
                                             nodes_to_exclude=_all_but(proto, names),
                                             op_types_to_quantize=("MatMul",))
            quantizer.process()
            proto = quantizer.model.model
        shared = (options.embeddings == WeightPrecision.INT4 and tied_embedding is not None
                  and head_precision == WeightPrecision.INT4 and options.symmetric and not options.exact_grid
                  and _share_tied_table(proto, head, tied_embedding, options.block_size))
        if options.embeddings == WeightPrecision.INT4 and not shared:
            # quantize_ndarray evaluates data / scale before masking scale == 0 out: harmless
            # NaNs for all-zero blocks, silenced around this call only.
            gathers = [n.name for n in proto.graph.node if n.op_type == "Gather"
                       and n.input and n.input[0] in {t.name for t in proto.graph.initializer}
                       and _is_embedding(proto, n)]
            if gathers:
                quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=options.block_size,
                                                 is_symmetric=options.symmetric,
                                                 nodes_to_exclude=_all_but(proto, gathers),
                                                 op_types_to_quantize=("Gather",),
                                                 quant_axes=(("Gather", 1),))
                with np.errstate(divide="ignore", invalid="ignore"):
                    quantizer.process()
                proto = quantizer.model.model
    finally:
        quant_logger.setLevel(level)
    quantized = []
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            original = node.name.removesuffix("_Q4").removesuffix("_Q8")
            quantized.append(QuantizedWeight(original, modules.get(original, ""), int(attrs["K"]),
                                             int(attrs["N"]), f"int{attrs['bits']}",
                                             int(attrs["block_size"]), bool(int(attrs["K"]) % int(attrs["block_size"]))))
        elif node.op_type == "GatherBlockQuantized":
            original = node.name.removesuffix("_Q4")
            quantized.append(QuantizedWeight(original, modules.get(original, "embedding"), 0, 0,
                                             "int4", options.block_size,
                                             reason="shares the INT4 LM head's blocks (tied)" if shared else None))
    missing = set(body) - {q.node for q in quantized}
    for name in sorted(missing):  # the quantizer skipped it without saying why in its API
        keep(name, "MatMulNBitsQuantizer left it unquantized")
    written = save_proto(proto, out, full_check=False, external_data=external_data)
    return WeightOnlyReport(options, tuple(quantized), tuple(kept), model_ir.size_bytes,
                            written.size_bytes, written.path)


def minmax_blocks(weight: np.ndarray, bits: int, block_size: int):
    """Asymmetric block quantization of a [K, N] weight along K, float zero points.

    Returns (packed [N, k_blocks, block_size * bits / 8] uint8, scales [N, k_blocks] float32,
    zero_points [N, k_blocks] float32) in MatMulNBits' layout: element k of a block in the low
    nibble when k is even (4-bit), dequantized as (q - zero_point) * scale. A partial last block
    is padded with its last value, so padding never widens a block's range.
    """
    k, n = weight.shape
    blocks = -(-k // block_size)
    w = np.pad(weight.astype(np.float32), ((0, blocks * block_size - k), (0, 0)), mode="edge")
    w = w.T.reshape(n, blocks, block_size)
    lo, hi = w.min(axis=-1), w.max(axis=-1)
    levels = (1 << bits) - 1
    scales = ((hi - lo) / levels).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    q = np.clip(np.rint((w - lo[..., None]) / safe[..., None]), 0, levels).astype(np.uint8)
    zero_points = np.where(scales > 0, -lo / safe, 0.0).astype(np.float32)
    # A constant block (scale 0) dequantizes from its zero point: keep its value in the scale.
    constant = scales == 0
    scales = np.where(constant, lo, scales).astype(np.float32)
    zero_points = np.where(constant, -1.0, zero_points).astype(np.float32)
    q[constant] = 0
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scales, zero_points


def _quantize_exact_grid(proto, names: list[str], bits: int, options: OrtWeightOnlyOptions) -> None:
    """Replace each named MatMul by MatMulNBits on min/max blocks (see minmax_blocks).

    FLOAT: the float zero points go into MatMulNBits. OFFSET: w = scale * (q - 8) + c per block
    with c = min + 8 * scale, so x @ W = MatMulNBits(x; q, scale, zero point 8) + blocksum(x) @ C,
    where blocksum sums x over each block of K ([..., K] → [..., K/block]) and C is [K/block, N];
    one blocksum serves every MatMul that reads the same input (q/k/v, gate/up).
    """
    import onnx
    from onnx import helper, numpy_helper

    wanted = set(names)
    inits = {t.name: t for t in proto.graph.initializer}
    offset = options.zero_points == ZeroPoints.OFFSET
    block = options.block_size
    blocksums: dict[str, str] = {}
    nodes = []
    for node in proto.graph.node:
        if node.op_type != "MatMul" or node.name not in wanted or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        k, n = weight.shape
        packed, scales, zero_points = minmax_blocks(weight, bits, block)
        use_offset = offset and not k % block  # a partial block would need a padded blocksum
        base = f"{node.input[1]}_Q{bits}{'o' if use_offset else 'f'}"
        attrs = {"K": k, "N": n, "bits": bits, "block_size": block}
        if options.accuracy_level:
            attrs["accuracy_level"] = options.accuracy_level
        if not use_offset:
            proto.graph.initializer.extend([numpy_helper.from_array(packed, base),
                                            numpy_helper.from_array(scales, base + "_scales"),
                                            numpy_helper.from_array(zero_points, base + "_zero_points")])
            replacement = helper.make_node("MatMulNBits", [node.input[0], base, base + "_scales",
                                                           base + "_zero_points"],
                                           list(node.output), name=f"{node.name}_Q{bits}",
                                           domain="com.microsoft", **attrs)
            replacement.metadata_props.extend(node.metadata_props)
            nodes.append(replacement)
            continue
        # w = scale * q + minimum = scale * (q - 8) + (minimum + 8 * scale): the zero point 8
        # centres the MatMulNBits term, so accuracy_level 4's int8 activations err on a centred
        # weight (as with symmetric INT4) instead of on one offset by 7.5 levels, which the exact
        # float correction would then fail to cancel. minimum = -zero_point * scale (constant
        # blocks: scale holds the value, zero point -1).
        minima = ((-zero_points + 8.0) * scales).T.astype(np.float32)  # [K/block, N]
        zero = np.full((n, -(-scales.shape[1] // 2)), 0x88, np.uint8)
        proto.graph.initializer.extend([numpy_helper.from_array(packed, base),
                                        numpy_helper.from_array(scales, base + "_scales"),
                                        numpy_helper.from_array(zero, base + "_zp8"),
                                        numpy_helper.from_array(minima, base + "_minima")])
        source = node.input[0]
        if source not in blocksums:
            shape = f"{base}_blocksum_shape"
            proto.graph.initializer.append(numpy_helper.from_array(
                np.asarray([0] * (_rank(proto, source) - 1) + [k // block, block], np.int64), shape))
            blocks = f"{source}__blocks{block}"
            nodes.append(helper.make_node("Reshape", [source, shape], [blocks], name=f"{node.name}_blocks"))
            nodes.append(helper.make_node("ReduceSum", [blocks, _axes(proto)], [f"{source}__blocksum{block}"],
                                          keepdims=0, name=f"{node.name}_blocksum"))
            blocksums[source] = f"{source}__blocksum{block}"
        main, correction = f"{node.output[0]}__nbits", f"{node.output[0]}__offset"
        quantized = helper.make_node("MatMulNBits", [source, base, base + "_scales", base + "_zp8"], [main],
                                     name=f"{node.name}_Q{bits}", domain="com.microsoft", **attrs)
        quantized.metadata_props.extend(node.metadata_props)
        nodes.extend([quantized,
                      helper.make_node("MatMul", [blocksums[source], base + "_minima"], [correction],
                                       name=f"{node.name}_offset"),
                      helper.make_node("Add", [main, correction], list(node.output), name=f"{node.name}_add")])
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {i for node in proto.graph.node for i in node.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def _rank(proto, name: str) -> int:
    """A tensor's rank from the exporter's value_info (linear inputs are [batch, sequence, K])."""
    for value in [*proto.graph.value_info, *proto.graph.input]:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return 3


def _axes(proto) -> str:
    from onnx import numpy_helper

    name = "edgeagent_last_axis"
    if not any(t.name == name for t in proto.graph.initializer):
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray([-1], np.int64), name))
    return name


def _all_but(proto, names: list[str]) -> list[str]:
    # The quantizer's nodes_to_include adds to op_types_to_quantize instead of narrowing it;
    # excluding every other node is what restricts a pass to `names`.
    wanted = set(names)
    return [n.name for n in proto.graph.node if n.name not in wanted]


def _weight_of(node, inits, producers):
    """('constant'|'tied', (K, N), initializer name) for a MatMul whose B is a 2-D weight."""
    b = node.input[1]
    if b in inits and len(inits[b].dims) == 2:
        return "constant", tuple(int(d) for d in inits[b].dims), b
    prod = producers.get(b)
    if prod is not None and prod.op_type == "Transpose" and prod.input[0] in inits:
        dims = inits[prod.input[0]].dims
        if len(dims) == 2:
            return "tied", (int(dims[1]), int(dims[0])), prod.input[0]
    return None


def _lm_head(graph, producers):
    node = producers.get("logits")
    if node is None or "logits" not in {o.name for o in graph.output}:
        raise UnsupportedModel("the model has no `logits` output: not a decoder IR")
    return node if node.op_type == "MatMul" else None


def _untie_head(proto, head, embedding_name: str) -> None:
    """Give a tied head its own [hidden, vocab] weight, so the quantizer sees a constant."""
    from onnx import numpy_helper

    embedding = next(t for t in proto.graph.initializer if t.name == embedding_name)
    array = numpy_helper.to_array(embedding)
    name = f"{embedding_name}.lm_head_transposed"
    proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.T), name))
    transpose_output = head.input[1]
    head.input[1] = name
    users = [n for n in proto.graph.node if transpose_output in n.input]
    if not users:  # the Transpose fed only the head
        for i, n in enumerate(proto.graph.node):
            if transpose_output in n.output:
                del proto.graph.node[i]
                break


def _share_tied_table(proto, head, embedding_name: str, block_size: int) -> bool:
    """Point the embedding Gather of a tied model at its INT4 head's blocks: one table, as
    onnxruntime-genai's builder writes for tied embeddings.

    MatMulNBits keeps B as [N, K / block, block / 2] uint8 with scales [N, K / block]: for the
    head N is the vocabulary and K the hidden size, so row v of B (reshaped [N, K / 2]) is token
    v's embedding in 4-bit blocks along the hidden axis, which GatherBlockQuantized reads with
    the same scales (symmetric blocks: zero point 8, MatMulNBits' default). Only that exact case
    is rewritten (symmetric, K a multiple of the block, the float32 table used only by the
    Gather); False leaves the graph as it was.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    nbits = next((n for n in graph.node if n.op_type == "MatMulNBits" and "logits" in n.output), None)
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] == embedding_name]
    users = [n for n in graph.node if embedding_name in n.input]
    if nbits is None or len(gathers) != 1 or len(users) != 1 or len(nbits.input) > 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in nbits.attribute}
    k, n = int(attrs["K"]), int(attrs["N"])
    if attrs.get("bits") != 4 or attrs.get("block_size") != block_size or k % block_size:
        return False
    inits = {t.name: t for t in graph.initializer}
    b_name, scales_name = nbits.input[1], nbits.input[2]
    if b_name not in inits or scales_name not in inits or list(inits[b_name].dims) != [n, k // block_size,
                                                                                      block_size // 2]:
        return False
    gather = gathers[0]
    shape_name = f"{embedding_name}.shared_int4_shape"
    table_name = f"{embedding_name}.shared_int4"
    graph.initializer.append(numpy_helper.from_array(np.asarray([n, k // 2], np.int64), shape_name))
    reshape = helper.make_node("Reshape", [b_name, shape_name], [table_name], name=f"{gather.name}_table")
    replacement = helper.make_node("GatherBlockQuantized", [table_name, gather.input[1], scales_name],
                                   list(gather.output), name=f"{gather.name}_Q4", domain="com.microsoft",
                                   bits=4, block_size=block_size, gather_axis=0, quantize_axis=1)
    replacement.metadata_props.extend(gather.metadata_props)
    index = list(graph.node).index(gather)
    graph.node.remove(gather)
    graph.node.insert(index, replacement)
    graph.node.insert(index, reshape)
    for i, t in enumerate(graph.initializer):
        if t.name == embedding_name:
            del graph.initializer[i]
            break
    return True


def _is_embedding(proto, node) -> bool:
    return node.input[1] == "input_ids" or "embed" in node.name or "embed" in _module_path(node)


def _module_path(node) -> str:
    """The torch module a node came from (dynamo's name_scopes), e.g. model.layers.0.mlp.up_proj."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")]
            except ValueError:
                return ""
            path = scopes[-2] if len(scopes) >= 2 else ""
            return path.removeprefix("inner.")
    return ""
