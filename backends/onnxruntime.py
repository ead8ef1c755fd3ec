"""ONNX Runtime backend: fp32 and fp16 graphs, INT8 through onnxruntime.quantization.

Recipes:
    fp32     graph as exported, plus ONNX Runtime's transformer fusions where they apply.
    fp16     weights and compute in float16 with float32 inputs and outputs (meant for GPU EPs;
             the CPU EP falls back to float32 kernels for many ops).
    dynamic  INT8 weights, activations quantized per call. No calibration. On x86 without VNNI
             this is the fast INT8 recipe (DESIGN.md, "Facts about the stack").
    static   QDQ graph with activation scales calibrated on an `edgeagent.Dataset` (MinMax,
             Entropy or Percentile), optionally per-channel weights and `reduce_range`.
"""

from __future__ import annotations

import collections
import copy
import enum
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.artifact import Artifact, write_manifest
from edgeagent.backend import (MAX_THREADS, Availability, Backend, Capabilities, Precision, Session,
                               coerce_enums, parse_device, sdk_version)
from edgeagent.data import Dataset
from edgeagent.errors import (ArtifactError, BackendUnavailable, CalibrationError, InputError, ModelRejected,
                              UnsupportedModel, UnsupportedPrecision)
from edgeagent.hostinfo import usable_cpus
from edgeagent.ir import ModelIR, save_proto
from edgeagent.ir import load as load_ir
from edgeagent.paths import edgeagent_home

MODEL_FILE = "model.onnx"
# Operators ONNX Runtime's transformer optimizer produces; seeing one means fusion applied.
SKIP_LAYER_NORM_FUSION = "SkipLayerNormFusion"  # ONNX Runtime's name for its load-time fusion
_FUSED_OPS = frozenset({"Attention", "MultiHeadAttention", "SkipLayerNormalization",
                        "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
                        "SkipSimplifiedLayerNormalization", "GroupQueryAttention"})


class Int8Recipe(enum.StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"


class CalibrationMethod(enum.StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class Fusions(enum.StrEnum):
    AUTO = "auto"  # run the transformer optimizer, keep its graph only if it fused something
    ON = "on"      # require it to succeed
    OFF = "off"


class Provider(enum.StrEnum):
    """ONNX Runtime execution providers edgeagent selects. CUDA and TensorRT come with the
    onnxruntime-gpu build (`edgeagent[gpu]`) and are not verified here (no NVIDIA GPU)."""

    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


PROVIDER_NAMES = {Provider.CPU: "CPUExecutionProvider", Provider.CUDA: "CUDAExecutionProvider",
                  Provider.TENSORRT: "TensorrtExecutionProvider"}


class ActivationType(enum.StrEnum):
    INT8 = "int8"    # S8S8: ONNX Runtime's recommended default on x86
    UINT8 = "uint8"  # U8S8: fast on VNNI; can saturate on AVX2 without reduce_range


@dataclass(frozen=True)
class OrtCompileOptions:
    """How the onnxruntime backend builds an artifact.

    Attributes:
        int8: INT8 recipe; None (default) means `static` when calibration data is given, else
            `dynamic`.
        calibration_method: static recipe's calibrator (default minmax).
        calibration_size: samples drawn from the calibration Dataset (default 128).
        percentile: the percentile calibrator's cut-off (default 99.999).
        per_channel: per-channel weight scales (default False).
        reduce_range: 7-bit weights, avoiding VPMADDUBSW saturation on AVX2 (default False).
        activation_type: static recipe's activation type, int8 or uint8 (default int8).
        fusions: transformer optimizer: auto, on or off (default auto).
        skip_layer_norm: fuse Add + LayerNormalization into SkipLayerNormalization, at compile
            and (through the manifest's recipe) at load (default False: ONNX Runtime 1.32's CPU
            kernel measured slower than the two nodes it replaces, 20 % on a one-layer student and
            5 % on the 6-layer teacher; `python benchmarks/ort_fusions.py` measures it).
        seed: calibration subset seed (default 0).
        nodes_to_exclude: node names kept in fp32 (comma-separated on the CLI); the INT8 fallback
            fills it with the nodes whose quantization hurts most.
        nodes_to_quantize: quantize only these nodes (default: all); per-node sensitivity uses it.
        device: the device the artifact is meant for (cpu, gpu, gpu.1; default None: cpu); it is
            recorded, and loading picks the execution provider from it unless told otherwise.
        block_size: decoders' weight-only INT4/INT8: weights per scale (default 32, as
            onnxruntime-genai's CPU builds use).
        symmetric: decoders' weight-only blocks without zero points (default True).
        accuracy_level: MatMulNBits' compute type for decoders: 0 unset, 1 fp32, 2 fp16, 3 bf16,
            4 int8 (default 4: INT4 without an int8 compute level dequantizes to float32 each call
            and loses its speed on CPUs, as ONNX Runtime's issues report).
        lm_head: a decoder's LM head precision: fp32, int8 or int4 (default: as the body).
        embeddings: a decoder's token embedding table: fp32 (default) or int4 (GatherBlockQuantized;
            with a tied, symmetric INT4 head it reads the head's blocks, so one INT4 table serves
            both, as onnxruntime-genai's builder does).
        zero_points: a decoder's asymmetric INT4 blocks (symmetric=False): integer (onnxruntime's
            quantizer, default), float or offset (each block spans exactly its min..max, so a
            GGUF's Q4_1 weights come back exactly; see edgeagent.causal.quantize_ort).
    """

    int8: Int8Recipe | None = None
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_size: int = 128
    percentile: float = 99.999
    per_channel: bool = False
    reduce_range: bool = False
    activation_type: ActivationType = ActivationType.INT8
    fusions: Fusions = Fusions.AUTO
    skip_layer_norm: bool = False
    seed: int = 0
    nodes_to_exclude: tuple[str, ...] = ()
    nodes_to_quantize: tuple[str, ...] = ()
    device: str | None = None
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    lm_head: str | None = None
    embeddings: str = "fp32"
    zero_points: str = "integer"

    def __post_init__(self) -> None:
        if self.device is not None:
            parse_device(self.device)
            object.__setattr__(self, "device", str(self.device).lower())
        for name in ("nodes_to_exclude", "nodes_to_quantize"):
            value = getattr(self, name)
            if isinstance(value, str):  # "a,b" from the CLI
                value = [v.strip() for v in value.split(",") if v.strip()]
            object.__setattr__(self, name, tuple(value))
        coerce_enums(self, "onnxruntime", {"int8": Int8Recipe, "calibration_method": CalibrationMethod,
                                           "fusions": Fusions, "activation_type": ActivationType})
        if self.calibration_size < 1:
            raise InputError(f"calibration_size must be at least 1, got {self.calibration_size}",
                             field="calibration_size")
        if not 0 < self.percentile <= 100:
            raise InputError(f"percentile must be in (0, 100], got {self.percentile}", field="percentile")


@dataclass(frozen=True)
class OrtLoadOptions:
    """How the onnxruntime backend runs an artifact.

    Attributes:
        threads: intra-op threads; None uses the target's threads, else the CPUs this process may
            use; "auto" times the model with one thread and with that many at load and keeps the
            faster (small models lose more to thread hand-offs than they gain).
        provider: cpu, cuda or tensorrt (ONNX Runtime's execution providers; default None: the
            device the artifact was compiled for, else cpu). cuda and tensorrt fall back to the CPU
            provider for operators they lack, as ONNX Runtime does; they need `edgeagent[gpu]`.
        device_id: the GPU index for cuda and tensorrt (default 0).
    """

    threads: int | str | None = None
    provider: Provider | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        coerce_enums(self, "onnxruntime", {"provider": Provider})
        if self.device_id < 0:
            raise InputError(f"device_id must be a GPU index (0 or more), got {self.device_id}", field="device_id")
        if isinstance(self.threads, str) and self.threads != "auto":
            raise InputError(f"threads must be a number or 'auto', got {self.threads!r}", field="threads")
        if isinstance(self.threads, int) and not 1 <= self.threads <= MAX_THREADS:
            raise InputError(f"threads must be between 1 and {MAX_THREADS}, got {self.threads}", field="threads")


def _ort_version() -> str | None:
    """The installed ONNX Runtime, whichever build provides it (onnxruntime or onnxruntime-gpu)."""
    return sdk_version("onnxruntime") or sdk_version("onnxruntime-gpu")


def default_threads(target: Any = None, requested: int | str | None = None) -> int:
    """Explicit thread count: the request, else the target's, else this process's CPUs."""
    if requested and requested != "auto":
        return int(requested)
    threads = getattr(target, "threads", None)
    if threads:
        return int(threads)
    return usable_cpus()


class _DatasetReader:
    """Adapts an edgeagent.Dataset to ONNX Runtime's CalibrationDataReader protocol."""

    def __init__(self, dataset: Dataset, input_names: list[str]) -> None:
        self._dataset = dataset
        self._names = input_names
        self._iter = iter(dataset)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._iter, None)
        if item is None:
            return None
        if set(item) != set(self._names):
            raise CalibrationError(f"calibration sample has inputs {sorted(item)}, the model "
                                   f"expects {sorted(self._names)}")
        self.count += 1
        return {name: item[name] for name in self._names}

    def rewind(self) -> None:
        self._iter = iter(self._dataset)


def calibration_reader(dataset: Dataset, input_names: list[str]):
    """An onnxruntime CalibrationDataReader over an edgeagent Dataset (`.count`: samples given)."""
    from onnxruntime.quantization import CalibrationDataReader

    class EdgeAgentCalibrationReader(_DatasetReader, CalibrationDataReader):
        pass

    return EdgeAgentCalibrationReader(dataset, input_names)


def pre_process(source: Path, dest: Path, **kwargs: Any) -> None:
    """onnxruntime's quant_pre_process, run from `dest`'s folder.

    When its symbolic shape inference gives up, onnxruntime saves a debug model (and an external
    data file) into the current directory before raising; running it from a scratch folder keeps
    those out of the user's working directory. Raises what quant_pre_process raises.
    """
    from onnxruntime.quantization import quant_pre_process

    previous = os.getcwd()
    os.chdir(Path(dest).parent)
    try:
        quant_pre_process(Path(source).resolve(), Path(dest).resolve(), **kwargs)
    finally:
        os.chdir(previous)


def quantize_static_checked(source: Path, dest: Path, reader, *, failure: str, **kwargs: Any) -> None:
    """onnxruntime's quantize_static with its failures named.

    Raises:
        CalibrationError: the calibration reader gave no samples, or its values overflow the scales.
        UnsupportedModel: the quantizer failed otherwise: "<failure>: <its error>".
    """
    from onnxruntime.quantization import quantize_static

    try:
        quantize_static(source, dest, reader, **kwargs)
    except CalibrationError:
        raise
    except Exception as exc:
        if reader.count == 0:
            raise CalibrationError("the calibration Dataset yielded no samples; give at least one") from None
        # Overflowing values fail onnxruntime's own scale assertion in some releases ("scale issue",
        # 1.20 spells it "scale isse") and give NaN scales in others, which check_finite_initializers
        # finds: the same cause, the same error.
        if "scale iss" in str(exc):
            raise CalibrationError(f"{failure}: the calibration data holds values that overflow the scales "
                                   f"({exc}); give representative samples") from None
        raise UnsupportedModel(f"{failure}: {exc}") from None
    if reader.count == 0:
        raise CalibrationError("the calibration Dataset yielded no samples; give at least one")


def _disabled_optimizers(artifact: Artifact) -> tuple[str, ...]:
    """The load-time fusions the artifact's recipe turned off (none for artifacts built before)."""
    names = artifact.recipe.get("disabled_optimizers", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"artifact {artifact.path}: manifest recipe.disabled_optimizers must be a list "
                            f"of optimizer names, got {names!r}; recompile the artifact")
    return tuple(names)


def split_unsqueezes(model) -> int:
    """Rewrite each Unsqueeze of several constant axes as a chain of one-axis Unsqueezes, in place.

    ONNX Runtime's attention fusion looks for BERT's additive mask as Unsqueeze → Unsqueeze →
    Cast → Sub → Mul, the shape TorchScript exports of `mask[:, None, None, :]` have. The
    dynamo exporter's optimizer folds the two Unsqueezes into one (axes [1, 2]), so the fusion
    misses every attention block of a dynamo export. Inserting ascending axes one at a time gives
    the same tensor. Returns how many nodes were split.
    """
    import onnx
    from onnx import numpy_helper

    constants = {i.name: i for i in model.graph.initializer}
    nodes, split = [], 0
    for node in model.graph.node:
        axes = None
        if node.op_type == "Unsqueeze" and node.domain in ("", "ai.onnx"):
            if len(node.input) == 2 and node.input[1] in constants:  # opset 13+: axes is an input
                axes = numpy_helper.to_array(constants[node.input[1]]).reshape(-1).tolist()
            elif len(node.input) == 1:  # opset < 13: axes is an attribute
                axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if not axes or len(axes) < 2 or min(axes) < 0:
            nodes.append(node)
            continue
        source, base = node.input[0], node.name or node.output[0]
        for k, axis in enumerate(sorted(axes)):
            output = node.output[0] if k == len(axes) - 1 else f"{base}/axis{axis}"
            if len(node.input) == 2:
                constant = numpy_helper.from_array(np.array([axis], np.int64), f"{base}/axes{axis}")
                model.graph.initializer.append(constant)
                nodes.append(onnx.helper.make_node("Unsqueeze", [source, constant.name], [output],
                                                   name=f"{base}/{k}"))
            else:
                nodes.append(onnx.helper.make_node("Unsqueeze", [source], [output], name=f"{base}/{k}",
                                                   axes=[axis]))
            source = output
        split += 1
    if split:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return split


def check_finite_initializers(model, precision: Precision) -> None:
    """Every float initializer (weights, biases, quantization scales) is finite.

    Raises:
        CalibrationError: an INT8 graph with a NaN or Inf scale or weight (calibration values near
            float32's limits overflow the scale computation).
        UnsupportedModel: any other graph with non-finite weights.
    """
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.data_type not in (1, 10, 11, 16):  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
            continue
        values = numpy_helper.to_array(tensor)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            if precision is Precision.INT8:
                raise CalibrationError(f"INT8 quantization produced NaN or Inf in {tensor.name!r}: the "
                                       "calibration data holds values that overflow the scales; give "
                                       "representative samples")
            raise UnsupportedModel(f"the compiled graph holds NaN or Inf in {tensor.name!r}")


def float16_graph(model):
    """The graph with float16 weights and compute, float32 inputs and outputs kept.

    Raises:
        UnsupportedModel: the converter fails on the graph.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:
        raise UnsupportedModel(f"fp16 conversion failed: {exc}") from None


class OnnxRuntimeSession(Session):
    """An onnxruntime.InferenceSession behind the validating Session interface.

    With `auto_threads`, sessions with one thread and with `threads` are timed on neutral inputs
    (zeros; dynamic dimensions 1 and 16), interleaved, and the faster is kept; `thread_choice`
    records the medians.
    """

    def __init__(self, model_path: Path, inputs, outputs, *, threads: int, auto_threads: bool = False,
                 disabled_optimizers: tuple[str, ...] = (), providers: list | None = None) -> None:
        super().__init__(inputs, outputs)
        self.thread_choice: dict[str, float] | None = None
        self.providers = providers or ["CPUExecutionProvider"]
        self.ort_session = self._open(model_path, threads, disabled_optimizers, self.providers)
        self.threads = threads
        self._output_names = [o.name for o in self.outputs]
        if auto_threads and threads > 1:
            single = self._open(model_path, 1, disabled_optimizers, self.providers)
            feeds = {s.name: np.zeros(tuple(d if isinstance(d, int) else (1 if axis == 0 else 16)
                                            for axis, d in enumerate(s.shape)), np.dtype(s.dtype))
                     for s in self.inputs}
            timings = {threads: [], 1: []}
            for _ in range(5):
                for count, session in ((threads, self.ort_session), (1, single)):
                    for _ in range(3):
                        session.run(None, feeds)
                    start = time.perf_counter()
                    for _ in range(10):
                        session.run(None, feeds)
                    timings[count].append((time.perf_counter() - start) / 10)
            medians = {count: float(np.median(values)) for count, values in timings.items()}
            self.thread_choice = {str(count): round(value * 1e6, 1) for count, value in medians.items()}
            if medians[1] < medians[threads]:
                self.ort_session, self.threads = single, 1

    @staticmethod
    def _open(model_path: Path, threads: int, disabled_optimizers: tuple[str, ...] = (),
              providers: list | None = None):
        import onnxruntime as ort

        from edgeagent.log import apply_native_severity

        apply_native_severity()  # its C++ logger writes to stderr itself; -v lets warnings through
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(model_path), so, providers=providers or ["CPUExecutionProvider"],
                                        disabled_optimizers=list(disabled_optimizers) or None)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UnsupportedModel(f"onnxruntime cannot load {model_path}: {exc}") from None

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.ort_session.run(self._output_names, feeds)))

    def _close_impl(self) -> None:
        del self.ort_session


def _cache_names(session) -> tuple[list[str], list[str], np.dtype]:
    """A decoder session's past and present names, layer by layer, and the cache's dtype."""
    layers = sorted({int(s.name.split(".")[1]) for s in session.inputs if s.name.startswith("past_key_values.")})
    past = [f"past_key_values.{i}.{k}" for i in layers for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in layers for k in ("key", "value")]
    spec = next(s for s in session.inputs if s.name == "past_key_values.0.key")
    return past, present, np.dtype(spec.dtype)


class OrtDecoderCache:
    """A decoder's KV cache kept as ONNX Runtime OrtValues between steps (IO binding).

    Each step binds the previous step's `present.*` OrtValues as the next `past_key_values.*`
    and lets ONNX Runtime allocate the new ones, so the cache never becomes a numpy array on the
    way: only the logits are read out. (The standard-op graph's Concat still writes each step's
    present from past plus the new token; sharing one buffer across steps needs ONNX Runtime's
    GroupQueryAttention contrib op, which this portable IR does not use.) `select` goes through
    numpy, for beams and rows that finish.
    """

    def __init__(self, session: OnnxRuntimeSession, batch: int) -> None:
        import onnxruntime as ort

        from edgeagent.generate.decoder import step_inputs

        self._ort, self._step_inputs = ort, step_inputs
        self._session = session.ort_session
        self._past, self._present, dtype = _cache_names(session)
        heads, head_dim = session.kv_shape
        empty = np.zeros((batch, heads, 0, head_dim), dtype)
        self.past = [ort.OrtValue.ortvalue_from_numpy(empty) for _ in self._past]
        self.attention_mask = np.zeros((batch, 0), np.int64)
        self.next_position = np.zeros(batch, np.int64)
        self.steps = 0

    def step(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        tokens, mask, positions, advance = self._step_inputs(self.attention_mask, self.next_position, tokens, valid)
        binding = self._session.io_binding()
        for name, value in (("input_ids", tokens), ("attention_mask", mask), ("position_ids", positions)):
            binding.bind_cpu_input(name, value)
        for name, value in zip(self._past, self.past):
            binding.bind_ortvalue_input(name, value)
        for name in ("logits", *self._present):
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self.past = list(outputs[1:])
        self.attention_mask, self.next_position = mask, self.next_position + advance
        self.steps += 1
        return outputs[0].numpy()

    def select(self, rows) -> None:
        rows = np.asarray(rows, np.int64)
        self.past = [self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p.numpy()[rows])) for p in self.past]
        self.attention_mask, self.next_position = self.attention_mask[rows], self.next_position[rows]


class OrtSharedKVCache:
    """A fused decoder's KV cache as one buffer per layer that GroupQueryAttention reads and
    extends in place (its past_present_share_buffer mode), for artifacts whose manifest says
    `kv_buffer: shared`.

    Each layer's past and present are bound to the same preallocated buffer, once; a step then
    binds only input_ids, attention_mask, position_ids and a logits array, so neither the cache
    nor its 2 × layers bindings are rebuilt per token (what the standard graph's cache costs in
    Python). The buffers start at `initial_capacity` positions (at most the model's max_length)
    and double, copying what they hold, when a step needs more.
    """

    INITIAL_CAPACITY = 256

    def __init__(self, session: OnnxRuntimeDecoderSession, batch: int, *, max_length: int | None = None,
                 initial_capacity: int = INITIAL_CAPACITY) -> None:
        import onnxruntime as ort

        from edgeagent.generate.decoder import step_inputs

        self._ort, self._step_inputs = ort, step_inputs
        self._session = session.ort_session
        self._past, self._present, self._dtype = _cache_names(session)
        self._heads, self._head_dim = session.kv_shape
        logits = next(s for s in session.outputs if s.name == "logits")
        self._vocab = logits.shape[-1] if isinstance(logits.shape[-1], int) else None
        self._max_length = max_length
        self._initial = initial_capacity
        self._binding = self._session.io_binding()
        self._arrays: list[np.ndarray] = []  # the buffers' memory: OrtValues wrap these, so they stay referenced
        self.capacity = 0
        self.batch = batch
        self.attention_mask = np.zeros((batch, 0), np.int64)
        self.next_position = np.zeros(batch, np.int64)
        self.steps = 0

    def _bind(self, arrays: list[np.ndarray]) -> None:
        self._arrays = arrays
        for past, present, array in zip(self._past, self._present, arrays):
            value = self._ort.OrtValue.ortvalue_from_numpy(array)
            self._binding.bind_ortvalue_input(past, value)
            self._binding.bind_ortvalue_output(present, value)
        self.capacity = arrays[0].shape[2] if arrays else 0

    def _reserve(self, total: int) -> None:
        if total <= self.capacity:
            return
        capacity = max(total, 2 * self.capacity, self._initial)
        if self._max_length:
            capacity = max(total, min(capacity, self._max_length))
        shape = (self.batch, self._heads, capacity, self._head_dim)
        grown = [np.zeros(shape, self._dtype) for _ in self._past]
        for new, old in zip(grown, self._arrays):
            new[:, :, :old.shape[2]] = old
        self._bind(grown)

    def step(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        tokens, mask, positions, advance = self._step_inputs(self.attention_mask, self.next_position, tokens, valid)
        self._reserve(mask.shape[1])
        binding = self._binding
        for name, value in (("input_ids", tokens), ("attention_mask", mask), ("position_ids", positions)):
            binding.bind_cpu_input(name, value)
        if self._vocab is None:
            binding.bind_output("logits", "cpu")
            self._session.run_with_iobinding(binding)
            logits = binding.get_outputs()[0].numpy()
        else:  # written straight into this array: no OrtValue per output to wrap and copy
            logits = np.empty((*tokens.shape, self._vocab), np.float32)
            binding.bind_output("logits", "cpu", element_type=np.float32, shape=logits.shape,
                                buffer_ptr=logits.ctypes.data)
            self._session.run_with_iobinding(binding)
        self.attention_mask, self.next_position = mask, self.next_position + advance
        self.steps += 1
        return logits

    def select(self, rows) -> None:
        rows = np.asarray(rows, np.int64)
        self.batch = len(rows)
        self._bind([np.ascontiguousarray(a[rows]) for a in self._arrays])
        self.attention_mask, self.next_position = self.attention_mask[rows], self.next_position[rows]


class OnnxRuntimeDecoderSession(OnnxRuntimeSession):
    """A decoder artifact: `run` as any Session, plus `decoder_cache(batch)`, which the generation
    loop drives so the KV cache stays in ONNX Runtime between steps (one shared buffer per layer
    where the artifact's fused graph allows it, else past → present OrtValues)."""

    def __init__(self, *args, kv_shape: tuple[int, int], shared_kv: bool = False, max_length: int | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kv_shape = kv_shape
        self.shared_kv = shared_kv
        self.max_length = max_length
        self.check_finite = False  # the loop feeds back the model's own cache: no NaN scan per step

    def decoder_cache(self, batch: int) -> OrtDecoderCache | OrtSharedKVCache:
        if self.shared_kv:
            return OrtSharedKVCache(self, batch, max_length=self.max_length)
        return OrtDecoderCache(self, batch)


def _kv_shape(inputs, metadata: Mapping[str, Any]) -> tuple[int, int]:
    spec = next((s for s in inputs if s.name == "past_key_values.0.key"), None)
    if spec is None or spec.rank != 4:
        raise UnsupportedModel("the decoder artifact has no past_key_values.0.key of rank 4; export it again")
    dims = []
    for axis, key in ((1, "num_kv_heads"), (3, "head_dim")):
        value = spec.shape[axis]
        if not isinstance(value, int):
            value = int(metadata.get(key, 0) or 0)
        if value < 1:
            raise UnsupportedModel(f"the decoder's {key} is neither fixed in its signature nor in ir.json")
        dims.append(value)
    return dims[0], dims[1]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU: fp32, fp16 and INT8 (dynamic, or static QDQ)."""

    name = "onnxruntime"
    pip_extra = "cpu"  # or "gpu": the two builds cannot be installed together
    CompileOptions = OrtCompileOptions
    LoadOptions = OrtLoadOptions
    sdk_modules = ("onnxruntime",)
    host_rank = 10  # a core dependency that runs on every CPU: the reference where no profile says otherwise

    def int8_recipes(self) -> list[tuple[str, dict[str, Any]]]:
        # Dynamic needs no calibration and wins on AVX2; static QDQ pays off with VNNI; on AVX2,
        # U8S8 can saturate in VPMADDUBSW, which reduce_range (7-bit weights) avoids.
        return [("dynamic", {"int8": "dynamic"}),
                ("static", {"int8": "static"}),
                ("static-per_channel", {"int8": "static", "per_channel": True}),
                ("static-reduce_range", {"int8": "static", "reduce_range": True})]

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name=self.name, devices=self._devices(),
            precisions=(Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT4),
            needs_calibration=(),  # only the static INT8 recipe does, and it says so
            pip_extra="cpu", sdk_version=_ort_version(),
            recipes={"fp32": ("fp32",), "fp16": ("fp16",),
                     "int8": tuple(r.value for r in Int8Recipe) + ("weight-only (decoders)",),
                     "int4": ("weight-only (decoders)",)})

    def available(self) -> Availability:
        if _ort_version() is None:
            return Availability(False, "onnxruntime is not installed",
                                "pip install 'edgeagent[cpu]' (or 'edgeagent[gpu]' for NVIDIA GPUs: never both)")
        return Availability(True)

    @staticmethod
    def _providers_here() -> list[str]:
        import onnxruntime as ort

        return list(ort.get_available_providers())

    def _devices(self) -> tuple[str, ...]:
        """"CPU", and "GPU" where this build has the CUDA provider (the GPU index is not probed)."""
        if not self.available():
            return ()
        return ("CPU", "GPU") if PROVIDER_NAMES[Provider.CUDA] in self._providers_here() else ("CPU",)

    def device_options(self, device: str) -> dict[str, Any]:
        """`--device cpu|gpu|gpu.N` as onnxruntime load options (an execution provider and GPU index).

        Raises:
            BackendUnavailable: the device's provider is not in this onnxruntime build (the
                providers present are listed).
        """
        kind, index = parse_device(device)
        if kind == "cpu":
            return {"device": "cpu", "provider": "cpu"}
        if kind != "gpu":
            raise BackendUnavailable(f"onnxruntime has no {device!r} device; devices here: "
                                     f"{[d.lower() for d in self._devices()]}")
        present = self._providers_here()
        if PROVIDER_NAMES[Provider.CUDA] not in present:
            raise BackendUnavailable(f"onnxruntime cannot run on {device!r}: this build has the providers "
                                     f"{present}, not CUDAExecutionProvider; install 'edgeagent[gpu]' in place of "
                                     "'edgeagent[cpu]' on a machine with an NVIDIA GPU")
        return {"device": str(device).lower(), "provider": "cuda", "device_id": index or 0}

    def _provider_list(self, opts: OrtLoadOptions, artifact: Artifact) -> list:
        provider = opts.provider
        if provider is None:
            recorded = artifact.recipe.get("device")
            provider = Provider.CUDA if isinstance(recorded, str) and recorded.startswith("gpu") else Provider.CPU
        if provider is Provider.CPU:
            return ["CPUExecutionProvider"]
        present = self._providers_here()
        wanted = PROVIDER_NAMES[provider]
        if wanted not in present:
            raise BackendUnavailable(f"onnxruntime execution provider {wanted} is not in this build (present: "
                                     f"{present}); install 'edgeagent[gpu]' in place of 'edgeagent[cpu]'")
        gpu = {"device_id": opts.device_id}
        chain = [(wanted, gpu if provider is Provider.CUDA else
                  {**gpu, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(edgeagent_home() / "onnxruntime-tensorrt-cache")})]
        if provider is Provider.TENSORRT and PROVIDER_NAMES[Provider.CUDA] in present:
            chain.append((PROVIDER_NAMES[Provider.CUDA], gpu))
        return [*chain, "CPUExecutionProvider"]

    def compile(self, ir: ModelIR, precision: Precision | str, *, calibration: Dataset | None = None,
                target: Any = None, workdir: str | os.PathLike | None = None,
                options: Any = None) -> Artifact:
        """Compile `ir` into an artifact folder.

        Args:
            ir: the model.
            precision: fp32, fp16 or int8.
            calibration: Dataset for the static INT8 recipe (default None).
            target: a Target, recorded in the manifest (default None).
            workdir: the artifact folder, new or empty (default: a temporary folder).
            options: OrtCompileOptions or a mapping of them (default OrtCompileOptions()).

        Raises:
            UnsupportedPrecision: not fp32, fp16 or int8.
            CalibrationError: static INT8 without calibration data, or data the model does not take.
            UnsupportedModel: the quantizer or the transformer optimizer fails on the graph.
            InputError: options the backend refuses.
        """
        self.require_available()
        precision = self.check_precision(precision)
        opts = self.compile_options(options)
        from edgeagent.causal.export import is_decoder

        if is_decoder(ir):
            return self._compile_decoder(ir, precision, opts, target, self.new_workdir(workdir))
        if precision is Precision.INT4:
            raise UnsupportedPrecision("int4 is weight-only quantization for generative decoders (IRs that "
                                       "`edgeagent export --task text-generation` writes); use int8 for this model")
        out = self.new_workdir(workdir)
        recipe: dict[str, Any] = {"name": str(precision), **({"device": opts.device} if opts.device else {})}
        evidence: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="edgeagent-ort-") as tmp:
            source = Path(tmp) / "source.onnx"
            proto = ir.proto()
            fused = self._fuse(proto, opts, evidence)
            import onnx

            onnx.save_model(fused, str(source), save_as_external_data=fused.ByteSize() > (1 << 31) - (64 << 20))
            if precision is Precision.FP32:
                result = onnx.load(str(source))
            elif precision is Precision.FP16:
                result = self._fp16(source)
            else:
                kind = opts.int8 or (Int8Recipe.STATIC if calibration is not None else Int8Recipe.DYNAMIC)
                recipe["name"] = kind.value
                if opts.int8 is None:
                    evidence["int8_recipe_choice"] = (
                        "static: calibration data was given" if kind is Int8Recipe.STATIC
                        else "dynamic: no calibration data was given")
                quantized = Path(tmp) / "quantized.onnx"
                if kind is Int8Recipe.DYNAMIC:
                    self._quantize_dynamic(source, quantized, opts)
                else:
                    self._quantize_static(ir, source, quantized, calibration, opts, recipe, Path(tmp))
                result = onnx.load(str(quantized))
            check_finite_initializers(result, precision)
            recipe.update(self._recipe_settings(precision, recipe["name"], opts))
            recipe["fusions"] = evidence.pop("fusions")
            # load() reads this, so ONNX Runtime does not redo at load what compile chose not to do.
            recipe["disabled_optimizers"] = [] if opts.skip_layer_norm else [SKIP_LAYER_NORM_FUSION]
            self._stamp(result, ir)
            save_proto(result, out / MODEL_FILE, full_check=False)
        return write_manifest(
            out, backend=self.name, precision=str(precision), recipe=recipe, source_sha256=ir.sha256,
            signature=ir.signature(), sdk={"onnxruntime": _ort_version(), "onnx": sdk_version("onnx")},
            # Dynamic INT8 scales activations per call from the whole input tensor, so a padded
            # batch's answers depend on its neighbours; every other recipe's do not.
            capabilities={"batch_invariant": recipe["name"] != Int8Recipe.DYNAMIC.value,
                          "int8_node_exclusion": True},
            target=getattr(target, "name", target), evidence=evidence or None)

    def load(self, artifact: Artifact, *, options: Any = None, target: Any = None) -> OnnxRuntimeSession:
        """Open an artifact built by this backend.

        Args:
            artifact: the verified artifact.
            options: OrtLoadOptions or a mapping of them (default OrtLoadOptions()).
            target: a Target supplying the thread count when options give none.

        Raises:
            ModelRejected: the model file fails the safety checks.
            UnsupportedModel: onnxruntime cannot load it.
        """
        self.require_available()
        opts = self.load_options(options)
        # Every safety check on the file and its external data, which must be listed (hashed) too.
        model_path = artifact.load_model(MODEL_FILE).path
        common = dict(threads=default_threads(target, opts.threads), disabled_optimizers=_disabled_optimizers(artifact),
                      auto_threads=opts.threads == "auto", providers=self._provider_list(opts, artifact))
        if artifact.capabilities.get("decoder"):
            from edgeagent import safeio

            metadata = {}
            if "ir.json" in artifact.manifest["files"]:
                metadata = safeio.read_json(artifact.file("ir.json"), what="the decoder's ir.json", error=lambda reason: (
                    ArtifactError(f"{artifact.path}/ir.json {reason}; compile the decoder again")))
                metadata = metadata if isinstance(metadata, dict) else {}
            return OnnxRuntimeDecoderSession(model_path, artifact.inputs, artifact.outputs,
                                             kv_shape=_kv_shape(artifact.inputs, metadata),
                                             shared_kv=artifact.capabilities.get("kv_buffer") == "shared",
                                             max_length=int(metadata.get("max_length") or 0) or None, **common)
        return OnnxRuntimeSession(model_path, artifact.inputs, artifact.outputs, **common)

    def open_model(self, ir: ModelIR, *, options: Any = None, target: Any = None) -> OnnxRuntimeSession:
        """A session on an uncompiled, already checked ModelIR (ONNX Runtime runs standard ONNX as
        is): how `generate` runs a decoder IR folder without compiling it first."""
        opts = self.load_options(options)
        return OnnxRuntimeSession(ir.path, ir.inputs, ir.outputs, threads=default_threads(target, opts.threads))

    # -- generative decoders -------------------------------------------------------------------

    def _compile_decoder(self, ir: ModelIR, precision: Precision, opts: OrtCompileOptions, target: Any,
                         out: Path) -> Artifact:
        """A decoder IR: float32 as exported, or weight-only INT8/INT4 through MatMulNBits; the IR
        folder's tokenizer and configs travel with it."""
        import shutil

        from edgeagent.causal.export import copy_assets
        from edgeagent.causal.quantize_ort import OrtWeightOnlyOptions, quantize_weights_ort

        recipe: dict[str, Any] = {"name": str(precision), "task": "text-generation",
                                  **({"device": opts.device} if opts.device else {})}
        if precision is Precision.FP16:
            raise UnsupportedPrecision("fp16 decoders are meant for GPU execution providers and are not built "
                                       "here; compile fp32, int8 or int4 (weight-only)")
        with tempfile.TemporaryDirectory(prefix="edgeagent-ort-decoder-") as tmp:
            graph, recipe["fusions"] = self._fuse_decoder(ir, opts, Path(tmp) / MODEL_FILE)
            if precision is Precision.FP32:
                if graph is not None:  # model.onnx and its weights, model.onnx.data
                    for path in Path(tmp).iterdir():
                        shutil.copyfile(path, out / path.name)
                elif ir.path.name != MODEL_FILE and ir.external_files:
                    raise UnsupportedModel(f"the decoder's model file is {ir.path.name}; its external data names "
                                           f"it, so it cannot be renamed {MODEL_FILE}: export the IR again")
                else:
                    for name in (ir.path.name, *ir.external_files):
                        shutil.copyfile(ir.path.parent / name, out / (MODEL_FILE if name == ir.path.name else name))
            else:
                source = ir if graph is None else load_ir(Path(tmp) / MODEL_FILE, full_check=False)
                weight_only = OrtWeightOnlyOptions(
                    bits=4 if precision is Precision.INT4 else 8, block_size=opts.block_size,
                    symmetric=opts.symmetric, accuracy_level=opts.accuracy_level, lm_head=opts.lm_head,
                    embeddings=opts.embeddings, zero_points=opts.zero_points)
                report = quantize_weights_ort(source, out / MODEL_FILE, weight_only, external_data=graph is not None)
                recipe.update(name="weight-only", weights=f"int{4 if precision is Precision.INT4 else 8}",
                              activations="float32", **report.to_json())
        recipe["assets"] = copy_assets(ir, out)
        recipe["disabled_optimizers"] = []
        return write_manifest(
            out, backend=self.name, precision=str(precision), recipe=recipe, source_sha256=ir.sha256,
            signature=ir.signature(), sdk={"onnxruntime": _ort_version(), "onnx": sdk_version("onnx")},
            # Weight-only: activations are float, and left padding is masked, so a prompt's tokens do
            # not depend on its batch mates.
            capabilities={"batch_invariant": True, "int8_node_exclusion": True, "decoder": True,
                          "kv_buffer": recipe["fusions"].get("kv_buffer", "separate")},
            target=getattr(target, "name", target))

    @staticmethod
    def _fuse_decoder(ir: ModelIR, opts: OrtCompileOptions, dest: Path):
        """The IR rebuilt on ONNX Runtime's contrib operators (edgeagent.causal.ort_fused), saved at
        DEST and proved against the IR on a probe; (FusedGraph or None, the manifest's record).

        fusions=auto keeps the standard graph, with the reason, where the builder does not apply or
        the probe disagrees; on raises instead; off does not try.
        """
        import onnxruntime as ort

        from edgeagent.causal.export import open_decoder_ir
        from edgeagent.causal.ort_fused import FusionUnsupported, build_fused_decoder, check_fused_parity

        if opts.fusions is Fusions.OFF:
            return None, {"applied": False, "reason": "fusions=off"}
        try:
            metadata = dict(open_decoder_ir(ir.path.parent).metadata)
            graph = build_fused_decoder(ir.path, metadata)
            # Weights beside the graph (model.onnx.data): ONNX Runtime then reads them without
            # first holding the whole file as a protobuf, which doubled the peak RSS at load.
            save_proto(graph.proto, dest, full_check=False, external_data=True)
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = default_threads()
            sessions = [ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
                        for path in (ir.path, dest)]
            parity = check_fused_parity(*sessions, metadata)
            if not parity["ok"]:
                raise FusionUnsupported(
                    f"the fused graph disagrees with the IR on the probe (logits max abs diff "
                    f"{parity['logits_max_abs_diff']:.3g} over a scale of {parity['logits_scale']:.3g})")
            shared = check_fused_parity(*sessions, metadata, shared=True)
        except (FusionUnsupported, ModelRejected) as exc:
            if opts.fusions is Fusions.ON:
                raise UnsupportedModel(f"fusions=on, but the decoder cannot be fused: {exc}") from exc
            return None, {"applied": False, "reason": str(exc)}
        # The generation loop keeps one cache buffer per layer only where the probe proved it.
        return graph, {"applied": True, **graph.to_json(), "parity": parity, "shared_kv_parity": shared,
                       "kv_buffer": "shared" if shared["ok"] else "separate"}

    # -- recipes -----------------------------------------------------------------------------

    @staticmethod
    def _fuse(proto, opts: OrtCompileOptions, evidence: dict[str, Any]):
        import onnx

        if opts.fusions is Fusions.OFF:
            evidence["fusions"] = {"applied": False, "reason": "disabled by option"}
            return proto
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        # It warns about the producer name of every non-PyTorch graph; the evidence says enough.
        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        canonical = copy.deepcopy(proto)
        split_unsqueezes(canonical)
        fusion_options = FusionOptions("bert")
        fusion_options.enable_skip_layer_norm = opts.skip_layer_norm
        try:
            # opt_level=0: only the Python fusions, so the graph stays portable across CPUs;
            # ONNX Runtime applies its hardware-specific optimizations when it loads the model.
            optimized = optimize_model(canonical, model_type="bert", num_heads=0, hidden_size=0,
                                       opt_level=0, optimization_options=fusion_options).model
        except Exception as exc:  # the optimizer raises assorted errors on graphs it does not know
            if opts.fusions is Fusions.ON:
                raise UnsupportedModel(f"onnxruntime transformer fusions failed: {exc}; "
                                       "compile with fusions=off") from None
            evidence["fusions"] = {"applied": False, "reason": f"optimizer failed: {exc}"}
            return proto
        counts = collections.Counter(n.op_type for n in optimized.graph.node if n.op_type in _FUSED_OPS)
        if not counts and opts.fusions is Fusions.AUTO:
            evidence["fusions"] = {"applied": False, "reason": "no transformer pattern matched"}
            return proto
        # The fused nodes live in the com.microsoft domain; declare it, or shape inference
        # (run by the quantizers) rejects the graph.
        domains = {n.domain for n in optimized.graph.node if n.domain}
        declared = {o.domain for o in optimized.opset_import}
        for domain in sorted(domains - declared):
            optimized.opset_import.append(onnx.helper.make_opsetid(domain, 1))
        evidence["fusions"] = {"applied": True, "fused_ops": dict(sorted(counts.items()))}
        return optimized

    @staticmethod
    def _fp16(source: Path):
        import onnx

        return float16_graph(onnx.load(str(source)))

    @staticmethod
    def _quantize_dynamic(source: Path, dest: Path, opts: OrtCompileOptions) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            quantize_dynamic(source, dest, weight_type=QuantType.QInt8,
                             per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                             nodes_to_exclude=list(opts.nodes_to_exclude) or None,
                             nodes_to_quantize=list(opts.nodes_to_quantize) or None)
        except Exception as exc:
            raise UnsupportedModel(f"onnxruntime dynamic quantization failed: {exc}") from None

    def _quantize_static(self, ir: ModelIR, source: Path, dest: Path, calibration: Dataset | None,
                         opts: OrtCompileOptions, recipe: dict[str, Any], tmp: Path) -> None:
        from onnxruntime.quantization import CalibrationMethod as OrtMethod, QuantFormat, QuantType

        if calibration is None:
            raise CalibrationError("the static INT8 recipe needs calibration data: pass "
                                   "calibration=Dataset(...) (CLI: --calibration FILE.npz), or "
                                   "use int8=dynamic")
        prepared = tmp / "prepared.onnx"
        try:
            pre_process(source, prepared, skip_symbolic_shape=False)
            recipe["pre_process"] = True
        except Exception as exc:  # symbolic shape inference does not cover every graph
            prepared = source
            recipe["pre_process"] = f"skipped: {exc}"
        names = [s.name for s in ir.inputs]
        subset = calibration.subset(opts.calibration_size, seed=opts.seed)
        reader = calibration_reader(subset, names)
        method = {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.ENTROPY: OrtMethod.Entropy,
                  CalibrationMethod.PERCENTILE: OrtMethod.Percentile}[opts.calibration_method]
        extra = {"CalibPercentile": opts.percentile} if opts.calibration_method is CalibrationMethod.PERCENTILE else {}
        activation = QuantType.QInt8 if opts.activation_type is ActivationType.INT8 else QuantType.QUInt8
        quantize_static_checked(prepared, dest, reader, failure="onnxruntime static quantization failed",
                                quant_format=QuantFormat.QDQ, per_channel=opts.per_channel,
                                reduce_range=opts.reduce_range, activation_type=activation,
                                weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra,
                                nodes_to_exclude=list(opts.nodes_to_exclude) or None,
                                nodes_to_quantize=list(opts.nodes_to_quantize) or None)
        recipe["calibration_samples"] = reader.count

    @staticmethod
    def _recipe_settings(precision: Precision, name: str, opts: OrtCompileOptions) -> dict[str, Any]:
        if precision is not Precision.INT8:
            return {}
        settings: dict[str, Any] = {"per_channel": opts.per_channel, "reduce_range": opts.reduce_range,
                                    "weight_type": "int8"}
        if opts.nodes_to_exclude:
            settings["nodes_kept_fp32"] = list(opts.nodes_to_exclude)
        if opts.nodes_to_quantize:
            settings["nodes_quantized_only"] = list(opts.nodes_to_quantize)
        if name == Int8Recipe.STATIC:
            settings.update(calibration_method=str(opts.calibration_method),
                            calibration_size=opts.calibration_size,
                            activation_type=str(opts.activation_type), format="QDQ", seed=opts.seed)
            if opts.calibration_method is CalibrationMethod.PERCENTILE:
                settings["percentile"] = opts.percentile
        return settings

    @staticmethod
    def _stamp(proto, ir: ModelIR) -> None:
        from edgeagent.ir import set_metadata

        meta = {k: v for k, v in ir.metadata.items() if k not in ("sha256", "opset")}
        meta["source_sha256"] = ir.sha256
        set_metadata(proto, meta)


__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeSession", "OrtCompileOptions", "OrtLoadOptions", "Int8Recipe", "Provider",
           "CalibrationMethod", "Fusions", "ActivationType", "default_threads", "calibration_reader",
           "float16_graph", "pre_process", "quantize_static_checked", "check_finite_initializers"]
