"""OpenVINO backend: Intel CPUs, GPUs and NPUs; INT8 through NNCF.

Recipes:
    fp32              ONNX read by OpenVINO, saved as IR (.xml/.bin); inference precision
                      pinned to f32 (CPUs with AMX or AVX512-BF16 otherwise default to bf16).
    fp16              weights compressed to f16 and the f16 inference-precision hint.
    nncf              int8 through `nncf.quantize` fed by the edgeagent.Dataset.
    accuracy_control  int8 through `nncf.quantize_with_accuracy_control`: layers whose
                      quantization costs more than `max_drop` on the validation metric stay in
                      higher precision, and the manifest lists them.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeagent.artifact import Artifact, write_manifest
from edgeagent.backend import (MAX_THREADS, Availability, Backend, Capabilities, Precision, Session, coerce_enums,
                               module_importable, sdk_version)
from edgeagent.data import Dataset
from edgeagent.errors import BackendUnavailable, CalibrationError, InputError, UnsupportedModel, UnsupportedPrecision
from edgeagent.ir import UNKNOWN_DIM, ModelIR, TensorSpec
from edgeagent.paths import edgeagent_home

MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
INSTALL_HINT = "pip install 'edgeagent[openvino]'"


class Int8Recipe(enum.StrEnum):
    NNCF = "nncf"
    ACCURACY_CONTROL = "accuracy_control"


class PerformanceHint(enum.StrEnum):
    LATENCY = "latency"
    THROUGHPUT = "throughput"


class ModelKind(enum.StrEnum):
    AUTO = "auto"            # transformer when the graph has attention (MatMul feeding Softmax)
    TRANSFORMER = "transformer"
    GENERIC = "generic"


@dataclass(frozen=True)
class Validation:
    """Labelled data and a metric for accuracy-controlled INT8.

    Args:
        data: an iterable of (feeds, label) pairs; read several times.
        metric: metric(outputs, labels) → float, higher is better, where outputs is a list of
            {output_name: array} per sample. Default: top-1 accuracy of the first output.
    """

    data: Iterable[tuple[Mapping[str, np.ndarray], Any]]
    metric: Callable[[list[dict[str, np.ndarray]], list[Any]], float] | None = None


def top1_accuracy(outputs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
    correct = total = 0
    for out, label in zip(outputs, labels):
        logits = next(iter(out.values()))
        predicted = np.asarray(logits).reshape(-1, np.asarray(logits).shape[-1]).argmax(-1)
        truth = np.asarray(label).reshape(-1)
        correct += int((predicted == truth).sum())
        total += truth.size
    return correct / max(total, 1)


@dataclass(frozen=True)
class OpenVINOCompileOptions:
    """How the openvino backend builds an artifact.

    Attributes:
        device: CPU, GPU, NPU, AUTO, … as `ov.Core().available_devices` reports (default CPU); it
            is checked at compile time and recorded as the artifact's device.
        int8: nncf or accuracy_control (default nncf).
        subset_size: calibration samples (default 300, NNCF's default).
        preset: NNCF preset, performance or mixed (default: NNCF's choice for the model type).
        model_type: auto, transformer or generic (default auto).
        fast_bias_correction: NNCF's fast bias correction (default True).
        max_drop: accuracy_control's largest allowed absolute metric drop; None takes the
            target's budget, else 0.01.
        validation: labelled data and metric for accuracy_control.
        group_size: a decoder's INT4 weight compression: weights per scale (default 128, as
            optimum-intel's INT4 default; a width it does not divide takes a smaller power of two).
        ratio: a decoder's share of INT4-eligible weights in INT4, the rest INT8 (default 1.0;
            below 1 NNCF ranks layers by sensitivity on calibration prompts).
        symmetric: a decoder's weights without zero points (default False: asymmetric, as
            optimum-intel's default).
        all_layers: INT4 for a decoder's embedding and LM head too (default False: INT8).
        awq, scale_estimation: NNCF's data-aware INT4 methods for decoders (default False);
            they run on calibration prompts (the calibration data's input_ids, else built-in
            assistant prompts under the model's chat template).
    """

    device: str = "CPU"
    int8: Int8Recipe = Int8Recipe.NNCF
    subset_size: int = 300
    preset: str | None = None
    model_type: ModelKind = ModelKind.AUTO
    fast_bias_correction: bool = True
    max_drop: float | None = None
    validation: Validation | None = None
    group_size: int = 128
    ratio: float = 1.0
    symmetric: bool = False
    all_layers: bool = False
    awq: bool = False
    scale_estimation: bool = False

    def __post_init__(self) -> None:
        coerce_enums(self, "openvino", {"int8": Int8Recipe, "model_type": ModelKind})
        if not 0.0 < float(self.ratio) <= 1.0:
            raise InputError(f"ratio must be in (0, 1], got {self.ratio}", field="ratio")
        if self.group_size < 1:
            raise InputError(f"group_size must be at least 1, got {self.group_size}", field="group_size")
        if self.preset is not None and self.preset not in ("performance", "mixed"):
            raise InputError(f"openvino option preset={self.preset!r} is invalid; choose performance "
                             "or mixed", field="preset")
        if self.subset_size < 1:
            raise InputError(f"subset_size must be at least 1, got {self.subset_size}", field="subset_size")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise InputError(f"max_drop must be in [0, 1), got {self.max_drop}", field="max_drop")
        object.__setattr__(self, "device", str(self.device).upper())


@dataclass(frozen=True)
class OpenVINOLoadOptions:
    """How the openvino backend runs an artifact.

    Attributes:
        device: where to run it (default None: the device it was compiled for).
        performance_hint: latency or throughput (default latency).
        threads: inference threads; None uses the target's, else the plugin's default.
        cache_dir: model cache folder so that a second load is fast (default
            $EDGEAGENT_HOME/openvino-cache; "" disables it).
    """

    device: str | None = None
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    threads: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        coerce_enums(self, "openvino", {"performance_hint": PerformanceHint})
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise InputError(f"threads must be between 1 and {MAX_THREADS}, got {self.threads}", field="threads")
        if self.device is not None:
            object.__setattr__(self, "device", str(self.device).upper())


def _core():
    import openvino as ov

    return ov.Core()


def check_device(core, device: str) -> None:
    """Raise BackendUnavailable naming the present devices if `device` is not among them."""
    present = list(core.available_devices)
    base = device.split(":", 1)[0].split(".", 1)[0]
    if base in ("AUTO", "MULTI", "HETERO") or device in present or base in present:
        return
    raise BackendUnavailable(f"OpenVINO device {device!r} is not present; present devices: {present}. "
                             "Choose one with --device (cpu, gpu, gpu.1, npu) or --option device=NAME")


class OpenVINOSession(Session):
    """A compiled OpenVINO model with one reused InferRequest and shared input memory."""

    def __init__(self, compiled, inputs, outputs, *, device: str, threads: int | None) -> None:
        super().__init__(inputs, outputs)
        self.compiled_model = compiled
        self.request = compiled.create_infer_request()
        self.device = device
        self.threads = threads
        ports = {port.get_any_name(): port for port in compiled.outputs}
        self._ports = [(spec.name, ports[spec.name]) for spec in self.outputs]

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # share_inputs avoids copying the caller's arrays; outputs are copied so they survive
        # the next call on the reused request.
        result = self.request.infer(feeds, share_inputs=True)
        return {name: result[port] for name, port in self._ports}

    def _close_impl(self) -> None:
        del self.request
        del self.compiled_model


class OVStateCache:
    """A stateful decoder's cache: it lives in the infer request between steps; `beam_idx` tells the
    model which rows of the previous state each row continues (beams, finished rows leaving)."""

    def __init__(self, session: OpenVINODecoderSession, batch: int) -> None:
        from edgeagent.generate.decoder import step_inputs

        self._step_inputs, self._session = step_inputs, session
        session.request.reset_state()
        self.beam_idx = np.arange(batch, dtype=np.int32)
        self.attention_mask = np.zeros((batch, 0), np.int64)
        self.next_position = np.zeros(batch, np.int64)
        self.steps = 0

    def step(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        tokens, mask, positions, advance = self._step_inputs(self.attention_mask, self.next_position, tokens, valid)
        result = self._session.request.infer({"input_ids": tokens, "attention_mask": mask, "position_ids": positions,
                                             "beam_idx": self.beam_idx})
        self.attention_mask, self.next_position = mask, self.next_position + advance
        self.beam_idx = np.arange(tokens.shape[0], dtype=np.int32)
        self.steps += 1
        return np.asarray(result[self._session.logits_port])

    def select(self, rows) -> None:
        rows = np.asarray(rows, np.int64)
        self.beam_idx = rows.astype(np.int32)
        self.attention_mask, self.next_position = self.attention_mask[rows], self.next_position[rows]


class OpenVINODecoderSession(OpenVINOSession):
    """A stateful decoder: `decoder_cache(batch)` for the generation loop; one sequence batch at a
    time (the state belongs to the session's one infer request)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logits_port = self.compiled_model.output("logits")
        self.check_finite = False

    def decoder_cache(self, batch: int) -> OVStateCache:
        return OVStateCache(self, batch)


def _decoder_calibration(ir: ModelIR, calibration: Dataset | None, limit: int) -> list[dict[str, Any]]:
    """Prefill feeds for NNCF's data-aware weight compression: the calibration data's input_ids
    rows (padding dropped), else the bench's built-in assistant prompts under the chat template."""
    from edgeagent.causal.openvino_decoder import prefill_feeds

    token_lists: list[list[int]] = []
    if calibration is not None:
        for feeds in calibration:
            ids = np.asarray(feeds.get("input_ids"))
            if ids.ndim != 2:
                raise CalibrationError("a decoder's calibration samples need input_ids of shape [batch, tokens]")
            mask = np.asarray(feeds.get("attention_mask", np.ones_like(ids))).astype(bool)
            token_lists += [[int(t) for t in row[m]] for row, m in zip(ids, mask) if m.any()]
            if len(token_lists) >= limit:
                break
    else:
        from edgeagent.generate.prompts import DEFAULT_PROMPTS
        from edgeagent.generate.assets import DecoderAssets

        assets = DecoderAssets.from_folder(ir.path.parent)
        for text in DEFAULT_PROMPTS[:limit]:
            messages = [{"role": "user", "content": text}]
            token_lists.append(assets.encode(assets.render_chat(messages, add_generation_prompt=True),
                                             add_special_tokens=False) if assets.chat_template
                               else assets.encode(text))
    return prefill_feeds(token_lists[:limit])


def _spec(port) -> TensorSpec:
    """A TensorSpec of an OpenVINO port (dynamic dims named as the ONNX contract names them)."""
    names = {"input_ids": ("batch", "sequence"), "attention_mask": ("batch", "total_sequence"),
             "position_ids": ("batch", "sequence"), "beam_idx": ("batch",), "logits": ("batch", "sequence", None)}
    name = port.get_any_name()
    symbolic = names.get(name, ())
    shape: list[int | str] = []
    for axis, dim in enumerate(port.get_partial_shape()):
        if dim.is_static:
            shape.append(int(dim.get_length()))
        else:
            shape.append(symbolic[axis] if axis < len(symbolic) and symbolic[axis] else UNKNOWN_DIM)
    dtype = {"i64": "int64", "i32": "int32", "f32": "float32", "f16": "float16"}.get(port.get_element_type().get_type_name(),
                                                                                   "float32")
    return TensorSpec(name, dtype, tuple(shape))


class OpenVINOBackend(Backend):
    """OpenVINO runtime: fp32, fp16 and NNCF INT8 on the devices OpenVINO reports."""

    name = "openvino"
    pip_extra = "openvino"
    CompileOptions = OpenVINOCompileOptions
    LoadOptions = OpenVINOLoadOptions
    sdk_modules = ("openvino",)
    host_rank = 20

    def int8_recipes(self) -> list[tuple[str, dict[str, Any]]]:
        return [("nncf", {"int8": "nncf"}), ("nncf-mixed", {"int8": "nncf", "preset": "mixed"})]

    def capabilities(self) -> Capabilities:
        devices: tuple[str, ...] = ()
        if self.available():
            devices = tuple(_core().available_devices) + ("AUTO",)
        return Capabilities(
            name=self.name, devices=devices,
            precisions=(Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT4),
            needs_calibration=(Precision.INT8,), pip_extra=self.pip_extra,
            sdk_version=sdk_version("openvino"),
            recipes={"fp32": ("fp32",), "fp16": ("fp16",), "int8": tuple(r.value for r in Int8Recipe)})

    def device_options(self, device: str) -> dict[str, Any]:
        """`--device cpu|gpu|gpu.1|npu` as OpenVINO's device name, checked against the devices present.

        Raises:
            BackendUnavailable: OpenVINO does not see that device (the present ones are listed).
        """
        from edgeagent.backend import parse_device

        kind, index = parse_device(device)
        name = kind.upper() + (f".{index}" if index is not None else "")
        self.require_available()
        check_device(_core(), name)
        return {"device": name}

    def available(self) -> Availability:
        for module in ("openvino", "nncf"):
            if not module_importable(module):
                return Availability(False, f"{module} is not installed", INSTALL_HINT)
        return Availability(True)

    def compile(self, ir: ModelIR, precision: Precision | str, *, calibration: Dataset | None = None,
                target: Any = None, workdir: str | os.PathLike | None = None,
                options: Any = None) -> Artifact:
        """Convert `ir` to OpenVINO IR at `precision` and write an artifact.

        Args:
            ir: the model.
            precision: fp32, fp16 or int8.
            calibration: Dataset for int8 (required for int8).
            target: a Target; its name is recorded and its accuracy budget bounds max_drop.
            workdir: the artifact folder, new or empty (default: a temporary folder).
            options: OpenVINOCompileOptions or a mapping of them.

        Raises:
            UnsupportedModel: OpenVINO cannot convert an operator (named with its node).
            BackendUnavailable: the device is not present (the present ones are listed).
            CalibrationError: int8 without calibration data, or accuracy_control without validation.
        """
        self.require_available()
        precision = self.check_precision(precision)
        opts = self.compile_options(options)
        import openvino as ov

        core = _core()
        check_device(core, opts.device)
        from edgeagent.causal.export import is_decoder

        if is_decoder(ir):
            return self._compile_decoder(ir, precision, opts, target, self.new_workdir(workdir), calibration)
        if precision is Precision.INT4:
            raise UnsupportedPrecision("int4 is weight-only compression for generative decoders (IRs that "
                                       "`edgeagent export --task text-generation` writes); use int8 for this model")
        if precision is Precision.INT8 and calibration is None:
            raise CalibrationError("openvino int8 needs calibration data for NNCF: pass calibration="
                                   "Dataset(...) (CLI: --calibration FILE.npz)")
        out = self.new_workdir(workdir)
        model = self._read(core, ir)
        recipe: dict[str, Any] = {"name": str(precision), "device": opts.device}
        evidence: dict[str, Any] = {}
        if precision is Precision.INT8:
            model = self._quantize(model, ir, calibration, opts, target, recipe, evidence)
        recipe["inference_precision"] = {"fp32": "f32", "fp16": "f16", "int8": "f32"}[str(precision)]
        ov.save_model(model, str(out / MODEL_XML), compress_to_fp16=precision is Precision.FP16)
        return write_manifest(
            out, backend=self.name, precision=str(precision), recipe=recipe, source_sha256=ir.sha256,
            signature=ir.signature(), sdk={"openvino": sdk_version("openvino"), "nncf": sdk_version("nncf")},
            # NNCF's INT8 is static (scales fixed at calibration); edgeagent does not pass
            # NNCF's ignored scope, so nodes cannot be kept out by name.
            capabilities={"batch_invariant": True, "int8_node_exclusion": False},
            target=getattr(target, "name", target), evidence=evidence or None)

    def _compile_decoder(self, ir: ModelIR, precision: Precision, opts: OpenVINOCompileOptions, target: Any,
                         out: Path, calibration: Dataset | None = None) -> Artifact:
        """A decoder IR made stateful (the KV cache stays in the plugin), its weights compressed by
        NNCF for int8 (per channel) and int4 (groups of `group_size`); the IR's assets carried along."""
        import openvino as ov

        from edgeagent.causal.export import copy_assets
        from edgeagent.causal.openvino_decoder import (OVWeightMode, OVWeightOptions, compress_weights_openvino,
                                                       to_stateful_openvino)

        if precision is Precision.FP16:
            raise UnsupportedPrecision("fp16 decoders are not built here; compile fp32, int8 or int4 (weight-only)")
        layers = int(ir.metadata.get("num_layers", 0))
        model = to_stateful_openvino(ir.path, layers)
        recipe: dict[str, Any] = {"name": str(precision), "device": opts.device, "task": "text-generation",
                                  "stateful": True, "inference_precision": "f32", "kv_cache_precision": "f32"}
        if precision is not Precision.FP32:
            bits, kind = ("int4" if precision is Precision.INT4 else "int8"), ("sym" if opts.symmetric else "asym")
            mode = OVWeightMode(f"{bits}_{kind}")
            weights = OVWeightOptions(mode=mode, group_size=opts.group_size, ratio=opts.ratio,
                                      all_layers=opts.all_layers, awq=opts.awq,
                                      scale_estimation=opts.scale_estimation) \
                if precision is Precision.INT4 else OVWeightOptions(mode=mode)
            if precision is Precision.INT8 and (opts.awq or opts.scale_estimation or opts.all_layers or opts.ratio != 1.0):
                raise InputError("ratio, all_layers, awq and scale_estimation apply to int4 decoders (int8 weights "
                                 "are per channel, all layers); drop them or compile int4", field="ratio")
            dataset = None
            if weights.data_aware or (weights.is_int4 and weights.ratio < 1.0):
                dataset = _decoder_calibration(ir, calibration, weights.subset_size)
                recipe["calibration_prompts"] = len(dataset)
            model, report = compress_weights_openvino(model, weights, dataset=dataset, onnx_path=ir.path)
            recipe.update(name="weight-only", weights=str(precision), activations="float32", **report.to_json())
        ov.save_model(model, str(out / MODEL_XML), compress_to_fp16=False)
        recipe["assets"] = copy_assets(ir, out)
        signature = {"inputs": [_spec(port).to_json() for port in model.inputs],
                     "outputs": [_spec(port).to_json() for port in model.outputs]}
        return write_manifest(
            out, backend=self.name, precision=str(precision), recipe=recipe, source_sha256=ir.sha256,
            signature=signature, sdk={"openvino": sdk_version("openvino"), "nncf": sdk_version("nncf")},
            capabilities={"batch_invariant": True, "int8_node_exclusion": False, "decoder": True, "stateful": True},
            target=getattr(target, "name", target))

    def load(self, artifact: Artifact, *, options: Any = None, target: Any = None) -> OpenVINOSession:
        """Compile an artifact's IR for the device, with hint, threads and model cache.

        `options`: OpenVINOLoadOptions or a mapping of them."""
        self.require_available()
        opts = self.load_options(options)
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = _core()
        device = opts.device or str(artifact.recipe.get("device", "CPU"))
        check_device(core, device)
        cache = edgeagent_home() / "openvino-cache" if opts.cache_dir is None else opts.cache_dir
        if cache:
            core.set_property({props.cache_dir: str(cache)})
        precision = artifact.recipe.get("inference_precision", "f32")
        config: dict[Any, Any] = {
            hints.performance_mode: (hints.PerformanceMode.LATENCY if opts.performance_hint is PerformanceHint.LATENCY
                                     else hints.PerformanceMode.THROUGHPUT),
        }
        if device.startswith("CPU"):
            import openvino as ov

            config[hints.inference_precision] = ov.Type.f16 if precision == "f16" else ov.Type.f32
            if artifact.recipe.get("kv_cache_precision") == "f32":  # else u8 on AMX CPUs: not fp32 numerics
                config[hints.kv_cache_precision] = ov.Type.f32
        threads = opts.threads or getattr(target, "threads", None)
        if threads and device.startswith("CPU"):
            config[props.inference_num_threads] = int(threads)
        try:
            compiled = core.compile_model(str(artifact.file(MODEL_XML)), device, config)
        except RuntimeError as exc:
            raise UnsupportedModel(f"OpenVINO cannot compile the artifact for {device}: "
                                   f"{_first_line(exc)}") from None
        if artifact.capabilities.get("stateful"):
            return OpenVINODecoderSession(compiled, artifact.inputs, artifact.outputs, device=device, threads=threads)
        return OpenVINOSession(compiled, artifact.inputs, artifact.outputs, device=device, threads=threads)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _read(core, ir: ModelIR):
        try:
            return core.read_model(str(ir.path))
        except RuntimeError as exc:
            raise _unsupported(ir, exc) from None

    def _quantize(self, model, ir: ModelIR, calibration: Dataset, opts: OpenVINOCompileOptions, target: Any,
                  recipe: dict[str, Any], evidence: dict[str, Any]):
        import nncf

        names = [s.name for s in ir.inputs]

        def transform(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            if set(feeds) != set(names):
                raise CalibrationError(f"calibration sample has inputs {sorted(feeds)}, the model "
                                       f"expects {sorted(names)}")
            return {n: feeds[n] for n in names}

        calibration_set = nncf.Dataset(calibration, transform)
        kind = self._model_kind(ir, opts)
        kwargs: dict[str, Any] = {"subset_size": opts.subset_size,
                                  "fast_bias_correction": opts.fast_bias_correction}
        if kind is ModelKind.TRANSFORMER:
            kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if opts.preset:
            kwargs["preset"] = nncf.QuantizationPreset(opts.preset)
        recipe.update(name=str(opts.int8), model_type=str(kind), subset_size=opts.subset_size,
                      preset=opts.preset or "nncf default", fast_bias_correction=opts.fast_bias_correction)
        if opts.int8 is Int8Recipe.NNCF:
            try:
                return nncf.quantize(model, calibration_set, **kwargs)
            except CalibrationError:
                raise
            except Exception as exc:
                raise UnsupportedModel(f"nncf.quantize failed: {_first_line(exc)}") from None
        if opts.validation is None:
            raise CalibrationError("the accuracy_control recipe needs validation data and a metric: "
                                   "options=OpenVINOCompileOptions(int8='accuracy_control', validation=Validation(...))")
        max_drop = opts.max_drop
        if max_drop is None:
            budget = getattr(getattr(target, "budgets", None), "max_accuracy_drop", None)
            max_drop = float(budget) if budget is not None else 0.01
        pairs = list(opts.validation.data)
        if not pairs:
            raise CalibrationError("the validation data for accuracy_control is empty")
        metric = opts.validation.metric or top1_accuracy

        def validate(compiled_model, data) -> float:
            # NNCF passes the raw (feeds, label) items, so the labels travel with the feeds.
            request = compiled_model.create_infer_request()
            ports = [(p.get_any_name(), p) for p in compiled_model.outputs]
            outputs, labels = [], []
            for feeds, label in data:
                result = request.infer(transform(feeds))
                outputs.append({name: result[port] for name, port in ports})
                labels.append(label)
            return float(metric(outputs, labels))

        validation_set = nncf.Dataset(pairs, lambda pair: transform(pair[0]))
        try:
            plain = nncf.quantize(model, calibration_set, **kwargs)
            controlled = nncf.quantize_with_accuracy_control(
                model, calibration_set, validation_set, validate, max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE, **kwargs)
        except CalibrationError:
            raise
        except Exception as exc:
            raise UnsupportedModel(f"nncf.quantize_with_accuracy_control failed: {_first_line(exc)}") from None
        kept = sorted(_quantized_ops(plain) - _quantized_ops(controlled))
        recipe["max_drop"] = max_drop
        evidence["kept_in_higher_precision"] = kept
        evidence["validation_samples"] = len(pairs)
        return controlled

    @staticmethod
    def _model_kind(ir: ModelIR, opts: OpenVINOCompileOptions) -> ModelKind:
        if opts.model_type is not ModelKind.AUTO:
            return opts.model_type
        ops = {node.op_type for node in ir.proto(load_weights=False).graph.node}
        return ModelKind.TRANSFORMER if "Softmax" in ops and "MatMul" in ops else ModelKind.GENERIC


def _quantized_ops(model) -> set[str]:
    """Names of operations fed by a FakeQuantize: the ones NNCF quantized."""
    names = set()
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        for output in op.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                if consumer.get_type_name() != "FakeQuantize":
                    names.add(consumer.get_friendly_name())
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unsupported(ir: ModelIR, exc: BaseException) -> UnsupportedModel:
    """Name the operators OpenVINO could not convert and the ONNX nodes that use them."""
    text = str(exc)
    graph = ir.proto(load_weights=False).graph
    known = {node.op_type for node in graph.node}
    mentioned = sorted(op for op in known if re.search(rf"\b{re.escape(op)}\b", text))
    nodes = [f"{n.name or '(unnamed)'} ({n.domain + '::' if n.domain else ''}{n.op_type})"
             for n in graph.node if n.op_type in mentioned]
    if mentioned:
        return UnsupportedModel(f"OpenVINO cannot convert operator(s) {mentioned} used by node(s) "
                                f"{nodes[:10]}; replace them before export or use the onnxruntime backend")
    return UnsupportedModel(f"OpenVINO cannot read {ir.path}: {_first_line(exc)}")
