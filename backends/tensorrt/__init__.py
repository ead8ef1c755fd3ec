"""TensorRT backend: engines for NVIDIA GPUs and Jetson, built from the ONNX IR.

Recipes:
    fp32     the IR as is, in a strongly typed network (TF32 off, so fp32 means fp32).
    fp16     the IR converted to float16 compute with float32 inputs and outputs (the same
             converter as onnxruntime's fp16), in a strongly typed network.
    int8     `qdq` (default): an explicitly quantized graph — symmetric INT8 activations, per-channel
             symmetric weights, scales calibrated on an `edgeagent.Dataset` with onnxruntime's static
             quantizer — built as a strongly typed network, the way TensorRT 10 and 11 want INT8.
             `entropy`: TensorRT's implicit IInt8EntropyCalibrator2 with the calibration cache kept
             in the artifact, only where the installed TensorRT still has implicit calibrators.

An artifact holds the graph TensorRT parsed (`model.onnx`), the engine (`engine.plan`), the
timing cache, the per-layer precision report (`layers.json`) and the engine's identity in the
manifest. Engines are built only by edgeagent and cached by identity (see cache.py); an engine
whose identity does not match this machine is rebuilt from the artifact's graph, never loaded.

What needs no GPU — the QDQ graph, profiles, identities and the cache, reports — lives in
qdq.py, profiles.py, cache.py and report.py and is tested on CPU. This module and runner.py need
TensorRT and a GPU; they are written against TensorRT's documented Python API.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeagent import safeio
from edgeagent.artifact import Artifact, write_manifest
from edgeagent.backend import (Availability, Backend, Capabilities, Precision, coerce_enums, module_importable,
                               sdk_version)
from edgeagent.data import Dataset
from edgeagent.errors import (ArtifactError, BackendUnavailable, CalibrationError, InputError, UnsupportedModel,
                              UnsupportedPrecision)
from edgeagent.ir import ModelIR, save_proto, sha256_file

from .cache import PLAN_FILE, TIMING_CACHE_FILE, EngineCache, EngineIdentity, mismatches
from .profiles import ShapeRange, compute_profile, parse_shapes

INSTALL_HINT = ("pip install 'edgeagent[tensorrt]' --extra-index-url https://pypi.nvidia.com "
                "on a machine with an NVIDIA GPU and driver")
MODEL_FILE = "model.onnx"
LAYERS_FILE = "layers.json"
CALIBRATION_CACHE_FILE = "calibration.cache"
log = logging.getLogger("edgeagent.tensorrt")


class Int8Recipe(enum.StrEnum):
    QDQ = "qdq"
    ENTROPY = "entropy"


@dataclass(frozen=True)
class TrtCompileOptions:
    """How the tensorrt backend builds an engine.

    Attributes:
        int8: qdq (default) or entropy (implicit calibrator, TensorRT versions that still have it).
        calibration_method: the qdq recipe's calibrator: minmax, entropy or percentile (default minmax).
        calibration_size: calibration samples drawn from the Dataset (default 128).
        seed: calibration subset seed (default 0).
        shapes: optimization profile {input: (min, opt, max)}, or the CLI form
            "input_ids:1x1,1x32,8x128;attention_mask:1x1,1x32,8x128"; inputs left out take their
            range from the calibration data's shapes, else the defaults below.
        max_batch: largest batch of a dynamic first dimension (default 8).
        max_sequence: largest size of other dynamic dimensions without data or shapes (default 128).
        workspace_mb: builder workspace limit; None takes the target's (its tensorrt preset's
            workspace_mb, else half its memory_limit), else TensorRT's default.
        builder_optimization_level: 0-5; None is TensorRT's default (3).
        device: CUDA device index (default 0).
        nodes_to_exclude: nodes the qdq recipe keeps in floating point.
        block_size: decoders' weight-only int4/int8: weights per scale, 64 or 128 (default 128).
        lm_head: decoders' weight-only: quantize the LM head too (default True).
        max_length: decoders: the longest context the engine's profile admits (default the IR's).
    For decoders `max_sequence` is the most new tokens one call feeds (a prompt, or a chunk of it).
    """

    int8: Int8Recipe = Int8Recipe.QDQ
    calibration_method: str = "minmax"
    calibration_size: int = 128
    seed: int = 0
    shapes: Any = None
    max_batch: int = 8
    max_sequence: int = 128
    workspace_mb: int | None = None
    builder_optimization_level: int | None = None
    device: int = 0
    nodes_to_exclude: tuple[str, ...] = field(default=())
    block_size: int = 128
    lm_head: bool = True
    max_length: int | None = None

    def __post_init__(self) -> None:
        coerce_enums(self, "tensorrt", {"int8": Int8Recipe})
        if isinstance(self.shapes, str):
            object.__setattr__(self, "shapes", parse_shapes(self.shapes))
        if isinstance(self.nodes_to_exclude, str):
            object.__setattr__(self, "nodes_to_exclude",
                               tuple(v.strip() for v in self.nodes_to_exclude.split(",") if v.strip()))
        for name in ("calibration_size", "max_batch", "max_sequence"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}", field=name)
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise InputError(f"workspace_mb must be at least 1, got {self.workspace_mb}", field="workspace_mb")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise InputError(f"builder_optimization_level must be 0-5, got {self.builder_optimization_level}",
                             field="builder_optimization_level")
        if self.device < 0:
            raise InputError(f"device must be a CUDA device index (0 or more), got {self.device}", field="device")


@dataclass(frozen=True)
class TrtLoadOptions:
    """How the tensorrt backend runs an engine.

    Attributes:
        device: CUDA device index (default 0); an engine built for another GPU is rebuilt for it.
    """

    device: int = 0

    def __post_init__(self) -> None:
        if self.device < 0:
            raise InputError(f"device must be a CUDA device index (0 or more), got {self.device}", field="device")


def nvidia_gpus() -> list[str]:
    """NVIDIA GPUs the driver exposes, read from /proc without importing CUDA."""
    root = Path("/proc/driver/nvidia/gpus")
    names = []
    if root.is_dir():
        for info in sorted(root.glob("*/information")):
            for line in info.read_text(errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
    if not names and Path("/dev/nvidia0").exists():
        names.append("NVIDIA GPU")
    if not names and Path("/etc/nv_tegra_release").exists():
        names.append("Jetson (integrated)")
    return names


def resolve_workspace(opts: TrtCompileOptions, target: Any = None) -> tuple[int | None, str]:
    """The builder's workspace limit in bytes and where it came from (no GPU needed)."""
    if opts.workspace_mb is not None:
        return opts.workspace_mb << 20, "option workspace_mb"
    preset = target.preset("tensorrt") if target is not None and hasattr(target, "preset") else None
    if preset is not None and preset.options.get("workspace_mb"):
        return int(preset.options["workspace_mb"]) << 20, f"target {target.name} tensorrt preset workspace_mb"
    limit = getattr(target, "memory_limit_bytes", None)
    if limit:
        return limit // 2, f"half of target {target.name}'s memory_limit"
    return None, "TensorRT's default (the device's memory)"


def build_flags(precision: Precision, opts: TrtCompileOptions, profile: Mapping[str, ShapeRange],
                workspace: int | None, graph_sha256: str) -> dict[str, Any]:
    """The build settings that go into the engine's identity (no GPU needed)."""
    recipe = str(opts.int8) if precision is Precision.INT8 else str(precision)
    return {"recipe": recipe, "graph_sha256": graph_sha256, "strongly_typed": recipe != Int8Recipe.ENTROPY,
            "tf32": False, "workspace_bytes": workspace,
            "builder_optimization_level": opts.builder_optimization_level,
            "profile": {name: r.to_json() for name, r in sorted(profile.items())}}


def _explicit_ranges(shapes: Any) -> dict[str, ShapeRange]:
    """`shapes` given as {input: (min, opt, max)} (or the CLI string, parsed already) as ShapeRanges."""
    return {name: ShapeRange(*(tuple(int(d) for d in shape) for shape in triple))
            for name, triple in dict(shapes or {}).items()}


def _profile_from_json(data: Mapping[str, Any]) -> dict[str, ShapeRange]:
    return {name: ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"])) for name, r in data.items()}


class TensorRTBackend(Backend):
    """NVIDIA TensorRT: fp32, fp16 and INT8 engines (explicit QDQ, strongly typed) on GPUs; decoders
    as fp32/fp16 or weight-only INT8/INT4 engines with one profile over batch, sequence and past."""

    name = "tensorrt"
    pip_extra = "tensorrt"
    CompileOptions = TrtCompileOptions
    LoadOptions = TrtLoadOptions
    host_rank = 0  # available only where an NVIDIA GPU is: it then runs first
    sdk_modules = ("tensorrt",)

    def capabilities(self) -> Capabilities:
        gpus = nvidia_gpus()
        return Capabilities(
            name=self.name, devices=tuple(f"GPU:{i}" for i in range(len(gpus))),
            precisions=(Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT4),
            needs_calibration=(Precision.INT8,), pip_extra=self.pip_extra,
            sdk_version=sdk_version("tensorrt") or sdk_version("tensorrt-cu12") or sdk_version("tensorrt_libs"),
            recipes={"fp32": ("fp32",), "fp16": ("fp16",),
                     "int8": tuple(r.value for r in Int8Recipe) + ("weight-only (decoders)",),
                     "int4": ("weight-only (decoders)",)})

    def available(self) -> Availability:
        from .runner import device_library

        if not module_importable("tensorrt"):
            return Availability(False, "the tensorrt Python package is not installed (it comes from "
                                "NVIDIA's index, not PyPI)", INSTALL_HINT)
        if not nvidia_gpus():
            return Availability(False, "no NVIDIA GPU is visible (/proc/driver/nvidia/gpus is empty)",
                                "run on a machine with an NVIDIA GPU and driver")
        if device_library() is None:
            return Availability(False, "no library for device memory: neither torch with CUDA nor "
                                "cuda-python is installed", "pip install cuda-python")
        return Availability(True)

    def device_options(self, device: str) -> dict[str, Any]:
        """`--device gpu|gpu.N` as the CUDA device index; TensorRT runs on nothing else.

        Raises:
            BackendUnavailable: not a GPU, or TensorRT or the GPU is missing here.
        """
        from edgeagent.backend import parse_device

        kind, index = parse_device(device)
        if kind != "gpu":
            raise BackendUnavailable(f"tensorrt runs on NVIDIA GPUs only, not on {device!r}; GPUs here: "
                                     f"{nvidia_gpus() or 'none'}")
        self.require_available()
        gpus = nvidia_gpus()
        if (index or 0) >= max(1, len(gpus)):
            raise BackendUnavailable(f"there is no GPU {index}: GPUs here: {gpus}")
        return {"device": index or 0}

    def int8_recipes(self) -> list[tuple[str, dict[str, Any]]]:
        return [("qdq", {"int8": "qdq"})]

    # -- identity ------------------------------------------------------------------------------

    def _identity(self, ir_sha256: str, precision: str, flags: Mapping[str, Any], device: int) -> EngineIdentity:
        import tensorrt as trt

        from .runner import gpu_identity

        gpu, capability = gpu_identity(device)
        return EngineIdentity(ir_sha256=ir_sha256, tensorrt=str(trt.__version__), gpu=gpu,
                              compute_capability=capability, precision=precision, flags=dict(flags))

    # -- compile -------------------------------------------------------------------------------

    def compile(self, ir: ModelIR, precision: Precision | str, *, calibration: Dataset | None = None,
                target: Any = None, workdir: str | os.PathLike | None = None, options: Any = None) -> Artifact:
        """Build an engine artifact.

        Raises:
            BackendUnavailable: no TensorRT, GPU or device-memory library here.
            CalibrationError: INT8 without calibration data.
            UnsupportedModel: a node the parser rejects or a layer the builder cannot build,
                named with its ONNX node.
        """
        self.require_available()
        precision = self.check_precision(precision)
        opts = self.compile_options(options)
        from edgeagent.causal.export import copy_assets, is_decoder

        decoder = is_decoder(ir)
        if precision is Precision.INT4 and not decoder:
            raise UnsupportedPrecision("int4 is weight-only quantization for generative decoders (IRs that "
                                       "`edgeagent export --task text-generation` writes); use int8 for this model")
        if decoder:
            from .decoder import decoder_profile

            profile = decoder_profile(ir.inputs, ir.metadata, max_batch=opts.max_batch, max_prompt=opts.max_sequence,
                                      max_length=opts.max_length)
            profile.update(_explicit_ranges(opts.shapes))
            sources = {"decoder": "one profile for prefill (past 0) and decode steps (opt: 1 token, half the context)"}
        else:
            samples = list(calibration.subset(min(opts.calibration_size, 256), seed=opts.seed)) if calibration else None
            profile, sources = compute_profile(ir.inputs, samples=samples, shapes=opts.shapes,
                                               max_batch=opts.max_batch, default_dim=opts.max_sequence)
        workspace, workspace_source = resolve_workspace(opts, target)
        out = self.new_workdir(workdir)
        evidence: dict[str, Any] = {"profile_sources": sources, "workspace_source": workspace_source}
        recipe: dict[str, Any] = {"name": str(precision)}
        build_precision = precision
        if decoder and precision in (Precision.INT8, Precision.INT4):
            from .decoder import weight_only_graph

            graph, report = weight_only_graph(ir, 4 if precision is Precision.INT4 else 8,
                                              block_size=opts.block_size, lm_head=opts.lm_head)
            recipe.update(name="weight-only", task="text-generation", **report)
            build_precision = Precision.FP32  # the DQ nodes type the network (strongly typed): no INT8 flag
        else:
            graph, qdq = self._graph(ir, precision, calibration, opts)
            if qdq is not None:
                recipe.update(name=str(opts.int8), **qdq)
        if decoder:
            recipe["task"] = "text-generation"
            recipe["unverified"] = "decoder engines were written against TensorRT's API and not built on a GPU here"
        save_proto(graph, out / MODEL_FILE, full_check=False)
        flags = build_flags(build_precision, opts, profile, workspace, sha256_file(out / MODEL_FILE))
        identity = self._identity(ir.sha256, str(precision), flags, opts.device)
        cache = EngineCache()
        entry = cache.get(identity)
        evidence["engine_from_cache"] = entry is not None
        calibration_cache = out / CALIBRATION_CACHE_FILE if opts.int8 is Int8Recipe.ENTROPY and \
            precision is Precision.INT8 else None
        if entry is None:
            plan, timing = self._build(out / MODEL_FILE, build_precision, opts, profile, workspace,
                                       calibration=calibration, calibration_cache=calibration_cache)
            built = {TIMING_CACHE_FILE: timing}
            if calibration_cache is not None and calibration_cache.is_file():
                built[CALIBRATION_CACHE_FILE] = calibration_cache.read_bytes()
            entry = cache.put(identity, plan, built)
        plan_bytes = (entry / PLAN_FILE).read_bytes()
        (out / PLAN_FILE).write_bytes(plan_bytes)
        # The timing cache, and the entropy recipe's calibration cache that a rebuild needs.
        for name, content in cache.built_with(entry).items():
            (out / name).write_bytes(content)
        layers = self._inspect(plan_bytes, profile, [n.name for n in graph.graph.node])
        (out / LAYERS_FILE).write_text(json.dumps(layers, indent=2) + "\n", encoding="utf-8")
        import tensorrt as trt

        if decoder:
            recipe["assets"] = copy_assets(ir, out)
        return write_manifest(
            out, backend=self.name, precision=str(precision), recipe=recipe, source_sha256=ir.sha256,
            signature=ir.signature(), sdk={"tensorrt": str(trt.__version__), "onnx": sdk_version("onnx"),
                                           "onnxruntime": sdk_version("onnxruntime")},
            # Static INT8 scales; TensorRT cannot keep ONNX nodes out of INT8 by name here.
            capabilities={"batch_invariant": True, "int8_node_exclusion": False,
                          **({"decoder": True} if decoder else {})},
            target=getattr(target, "name", target), evidence=evidence,
            extra={"tensorrt": {"identity": identity.to_json(), "engine_key": identity.key,
                                "layer_precisions": layers["precisions"]}})

    @staticmethod
    def _graph(ir: ModelIR, precision: Precision, calibration: Dataset | None, opts: TrtCompileOptions):
        """The ONNX graph TensorRT parses for this precision, and the QDQ summary for int8."""
        if precision is Precision.FP32 or (precision is Precision.INT8 and opts.int8 is Int8Recipe.ENTROPY):
            if precision is Precision.INT8 and calibration is None:
                raise CalibrationError("the entropy INT8 recipe needs calibration data: pass calibration=Dataset(...)")
            return ir.proto(), None
        if precision is Precision.FP16:
            from ..onnxruntime import float16_graph

            return float16_graph(ir.proto()), None
        from .qdq import prepare_qdq

        return prepare_qdq(ir, calibration, calibration_size=opts.calibration_size, seed=opts.seed,
                           method=opts.calibration_method, nodes_to_exclude=opts.nodes_to_exclude)

    def _build(self, graph_path: Path, precision: Precision, opts: TrtCompileOptions, profile: Mapping[str, ShapeRange],
               workspace: int | None, *, calibration: Dataset | None = None, calibration_cache: Path | None = None,
               timing_cache: bytes | None = None) -> tuple[bytes, bytes]:
        """Parse and build; errors name the ONNX node (parser) or the layer and its nodes (builder)."""
        import onnx
        import tensorrt as trt

        from .report import build_error_message, parser_error_message, parser_errors

        logger = _collecting_logger(trt)
        builder = trt.Builder(logger)
        implicit = precision is Precision.INT8 and opts.int8 is Int8Recipe.ENTROPY
        flags = 0 if implicit else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(graph_path)):
            raise UnsupportedModel(parser_error_message(parser_errors(parser)))
        config = builder.create_builder_config()
        if workspace:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if opts.builder_optimization_level is not None:
            config.builder_optimization_level = opts.builder_optimization_level
        trt_profile = builder.create_optimization_profile()
        for name, shape_range in profile.items():
            trt_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
        config.add_optimization_profile(trt_profile)
        if implicit:
            if not hasattr(trt, "IInt8EntropyCalibrator2"):
                raise CalibrationError(f"TensorRT {trt.__version__} has no implicit calibrators; use int8=qdq")
            from .runner import entropy_calibrator, open_device

            # Implicit calibration runs at the calibration profile's shapes: one fixed shape.
            fixed = builder.create_optimization_profile()
            for name, shape_range in profile.items():
                fixed.set_shape(name, shape_range.opt, shape_range.opt, shape_range.opt)
            config.set_calibration_profile(fixed)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = entropy_calibrator(
                trt, calibration.subset(opts.calibration_size, seed=opts.seed) if calibration else [],
                {n: r.opt for n, r in profile.items()}, open_device(opts.device), calibration_cache)
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            names = [n.name for n in onnx.load(str(graph_path), load_external_data=False).graph.node]
            raise UnsupportedModel(build_error_message(logger.errors, names))
        return bytes(plan), bytes(config.get_timing_cache().serialize())

    @staticmethod
    def _deserialize(plan: bytes):
        import tensorrt as trt

        runtime = trt.Runtime(_collecting_logger(trt))
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise UnsupportedModel("TensorRT could not deserialize the engine edgeagent built; rebuild the artifact")
        return runtime, engine

    def _inspect(self, plan: bytes, profile: Mapping[str, ShapeRange], node_names: list[str]) -> dict[str, Any]:
        """Per-layer precisions, read with the inputs at their opt shapes (dynamic shapes hide formats)."""
        import tensorrt as trt

        from .report import layer_report

        _runtime, engine = self._deserialize(plan)
        context = engine.create_execution_context()
        for name, shape_range in profile.items():
            context.set_input_shape(name, shape_range.opt)
        inspector = engine.create_engine_inspector()
        inspector.execution_context = context
        return layer_report(inspector.get_engine_information(trt.LayerInformationFormat.JSON), node_names)

    # -- load ----------------------------------------------------------------------------------

    def load(self, artifact: Artifact, *, options: Any = None, target: Any = None):
        """Open an engine artifact; an engine built for another GPU or TensorRT is rebuilt, never loaded.

        Raises:
            ArtifactError: the manifest carries no engine identity (not built by edgeagent's tensorrt).
            UnsupportedModel: the (re)built engine cannot be deserialized or run here.
        """
        self.require_available()
        opts = self.load_options(options)
        meta = artifact.manifest.get("tensorrt")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("identity"), Mapping):
            raise ArtifactError(f"{artifact.path} has no TensorRT engine identity in its manifest; only engines "
                                "edgeagent built are loaded: rebuild with `edgeagent compile --backend tensorrt`")
        recorded = meta["identity"]
        current = self._identity(recorded["ir_sha256"], artifact.precision, recorded.get("flags", {}), opts.device)
        reasons = mismatches(recorded, current)
        rebuilt = None
        if not reasons:
            plan = artifact.file(PLAN_FILE).read_bytes()  # its sha256 was checked when the artifact opened
        else:
            rebuilt = "; ".join(reasons)
            log.warning("the engine in %s does not match this machine (%s): rebuilding it from %s, not loading it",
                        artifact.path, rebuilt, MODEL_FILE)
            plan = self._rebuild(artifact, current, opts)
        _runtime, engine = self._deserialize(plan)
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        expected = {s.name for s in artifact.inputs} | {s.name for s in artifact.outputs}
        if names != expected:
            raise UnsupportedModel(f"the engine's tensors {sorted(names)} differ from the artifact's signature "
                                   f"{sorted(expected)}; rebuild the artifact")
        from .runner import TensorRTSession

        layers = (safeio.read_json(artifact.file(LAYERS_FILE), what="layer report", follow_symlinks=False,
                                   error=lambda reason: ArtifactError(f"{artifact.path}: {LAYERS_FILE} {reason}"))
                  if LAYERS_FILE in artifact.manifest["files"] else None)
        session = TensorRTSession(engine, artifact.inputs, artifact.outputs, device=opts.device, layers=layers)
        session.runtime = _runtime  # the engine must not outlive its runtime
        session.rebuilt_reason = rebuilt
        return session

    def _rebuild(self, artifact: Artifact, identity: EngineIdentity, opts: TrtLoadOptions) -> bytes:
        cache = EngineCache()
        entry = cache.get(identity)
        if entry is None:
            flags = identity.flags
            precision = Precision.parse(identity.precision)
            recipe_opts = TrtCompileOptions(int8=flags.get("recipe") if precision is Precision.INT8 else Int8Recipe.QDQ,
                                     builder_optimization_level=flags.get("builder_optimization_level"),
                                     device=opts.device)
            built: dict[str, bytes] = {}
            if precision is Precision.INT8 and recipe_opts.int8 is Int8Recipe.ENTROPY:
                # The calibrator reads the artifact's cache instead of calibration data.
                built[CALIBRATION_CACHE_FILE] = artifact.file(CALIBRATION_CACHE_FILE).read_bytes()
            with tempfile.TemporaryDirectory(prefix="edgeagent-trt-") as tmp:
                calibration_cache = None
                if built:
                    calibration_cache = Path(tmp) / CALIBRATION_CACHE_FILE
                    calibration_cache.write_bytes(built[CALIBRATION_CACHE_FILE])
                plan, built[TIMING_CACHE_FILE] = self._build(
                    artifact.load_model(MODEL_FILE).path, precision, recipe_opts, _profile_from_json(flags["profile"]),
                    flags.get("workspace_bytes"), calibration_cache=calibration_cache)
            entry = cache.put(identity, plan, built)
        return (entry / PLAN_FILE).read_bytes()


def _collecting_logger(trt):
    """A trt.ILogger that keeps errors (for messages naming the layer) and forwards the rest to logging."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(str(msg))
                log.error("%s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("%s", msg)
            else:
                log.debug("%s", msg)

    return CollectingLogger()


__all__ = ["TensorRTBackend", "TrtCompileOptions", "TrtLoadOptions", "Int8Recipe", "nvidia_gpus", "resolve_workspace", "build_flags",
           "INSTALL_HINT"]
