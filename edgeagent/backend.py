"""The backend plug-in contract: Backend, Capabilities, Session, and the entry-point registry.

A backend is a loader (`compile`) and a runner (`Session`), as in Polygraphy. Everything else
in edgeagent dispatches through `get_backend(name)`, never on a backend's name.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.metadata
import importlib.util
import math
import os
import tempfile
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import BackendUnavailable, EdgeAgentError, InputError, UnsupportedModel, UnsupportedPrecision
from .ir import UNKNOWN_DIM, TensorSpec

if TYPE_CHECKING:
    from .artifact import Artifact
    from .data import Dataset
    from .ir import ModelIR

ENTRY_POINT_GROUP = "edgeagent.backends"
# More intra-op threads than any device has cores; ONNX Runtime crashes creating 400,000.
MAX_THREADS = 1024


class Precision(enum.StrEnum):
    """Numeric precision of a compiled model. For generative decoders `int8` and `int4` are
    weight-only (activations stay in floating point); `int4` exists for decoders only."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise UnsupportedPrecision(f"unknown precision {value!r}; choose one of "
                                       f"{[p.value for p in cls]}") from None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Computable without importing its SDK where possible.

    Attributes:
        name: the backend's registry name.
        devices: devices it can run on here (e.g. ("CPU",)); empty when unavailable.
        precisions: precisions it compiles.
        needs_calibration: precisions that require calibration data.
        pip_extra: the `pip install edgeagent[extra]` that brings its SDK.
        sdk_version: the installed SDK's version, or None.
        recipes: named compilation recipes per precision, e.g. {"int8": ("dynamic", "static")}.
    """

    name: str
    devices: tuple[str, ...]
    precisions: tuple[Precision, ...]
    needs_calibration: tuple[Precision, ...] = ()
    pip_extra: str | None = None
    sdk_version: str | None = None
    recipes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "devices": list(self.devices),
                "precisions": [str(p) for p in self.precisions],
                "needs_calibration": [str(p) for p in self.needs_calibration],
                "pip_extra": self.pip_extra, "version": self.sdk_version,
                "recipes": {k: list(v) for k, v in self.recipes.items()}}


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; if not, why and how to fix it."""

    ok: bool
    reason: str = ""
    install_hint: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class NoOptions:
    """Options of a backend that takes none."""


def sdk_version(distribution: str) -> str | None:
    """Installed version of a distribution, read from metadata without importing it."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_device(device: str) -> tuple[str, int | None]:
    """`cpu`, `gpu`, `gpu.1`, `npu` … → (kind, index or None).

    Raises:
        InputError: not of the form KIND or KIND.INDEX.
    """
    text = str(device).strip().lower()
    kind, dot, index = text.partition(".")
    if not kind.isalpha() or (dot and not index.isdigit()):
        raise InputError(f"device {device!r} is not of the form cpu, gpu, gpu.1, npu …", field="device")
    return kind, int(index) if dot else None


def module_importable(name: str) -> bool:
    """Whether `name` can be imported, found without importing it (a broken install counts as no)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def coerce_enums(options: Any, backend: str, fields: Mapping[str, type[enum.Enum]]) -> None:
    """In a frozen options dataclass's __post_init__: turn strings into the fields' enums.

    Raises:
        InputError: a value that is not one of the enum's, naming the valid ones.
    """
    for name, enum_type in fields.items():
        value = getattr(options, name)
        if value is None:
            continue
        try:
            object.__setattr__(options, name, enum_type(str(value).lower()))
        except ValueError:
            raise InputError(f"{backend} option {name}={value!r} is invalid; choose one of "
                             f"{[e.value for e in enum_type]}", field=name) from None


def parse_options(cls: type, values: Mapping[str, str] | None) -> Any:
    """Build an options dataclass from strings (`--option key=value` on the CLI).

    Strings convert to the field's declared type (bool, int, float, or None where the field
    is optional); enum-typed fields convert themselves in the dataclass's __post_init__.

    Raises:
        InputError: an unknown key or a value that does not convert.
    """
    if not values:
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise InputError(f"unknown option {key!r} for {cls.__name__}; valid options: "
                             f"{sorted(fields)}", field=key)
        kwargs[name] = _convert(name, hints[name], raw)
    return cls(**kwargs)


def _convert(name: str, annotation: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return _check_type(name, annotation, raw)
    args = typing.get_args(annotation) or (annotation,)
    text = raw.strip()
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    if bool in args:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"option {name}={raw!r} is not a boolean (true/false)", field=name)
    for kind, noun in ((int, "an integer"), (float, "a number")):
        if kind in args:
            try:
                return kind(text)
            except ValueError:
                if str in args:  # a field such as threads: int | "auto"; its __post_init__ checks the word
                    return text
                raise InputError(f"option {name}={raw!r} is not {noun}", field=name) from None
    return text


def _check_type(name: str, annotation: Any, value: Any) -> Any:
    """A value that is not a string (from a target's TOML or a Python mapping) must already have the
    field's type: a TOML `nodes_to_exclude = 5` is an error here, not a TypeError in a cell.

    Raises:
        InputError: a value of another type, naming the types the field takes.
    """
    kinds = (typing.get_args(annotation)
             if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,))
    for kind in kinds:
        origin = typing.get_origin(kind)
        if kind is type(None):
            if value is None:
                return value
        elif origin in (tuple, list):
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
        elif kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            if isinstance(value, (str, kind)):
                return value
        elif not isinstance(kind, type) or isinstance(value, kind):
            return value
    names = {bool: "a boolean", int: "an integer", float: "a finite number", str: "a string", type(None): "none"}
    wanted = " or ".join(dict.fromkeys(
        "a list of strings" if typing.get_origin(k) in (tuple, list) else
        "a string" if isinstance(k, type) and issubclass(k, enum.Enum) else
        names.get(k, getattr(k, "__name__", str(k))) for k in kinds))
    raise InputError(f"option {name}={value!r:.80} must be {wanted}, got {type(value).__name__}", field=name)


class Session(ABC):
    """A loaded model. `run` validates feeds, then the backend's `_run_impl` executes.

    Subclasses call `super().__init__(inputs, outputs)` and implement `_run_impl` and
    `_close_impl`. The validation is precomputed per input so it costs microseconds; only float
    inputs are scanned for NaN/Inf, once each. Set `check_finite = False` (or pass
    `check_finite=False`) in hot loops that feed back the model's own outputs, such as a KV cache.
    """

    check_finite: bool = True

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._names = frozenset(s.name for s in self.inputs)
        for s in self.inputs:
            try:
                np.dtype(s.dtype)
            except TypeError:
                raise UnsupportedModel(f"input {s.name!r} has dtype {s.dtype!r}, which numpy cannot hold; "
                                       "feed the model through a cast to a standard dtype") from None
        self._checks = [
            (s.name, np.dtype(s.dtype), s.rank,
             tuple((axis, d) for axis, d in enumerate(s.shape) if isinstance(d, int)),
             tuple((axis, d) for axis, d in enumerate(s.shape) if isinstance(d, str) and d != UNKNOWN_DIM),
             np.issubdtype(np.dtype(s.dtype), np.floating))
            for s in self.inputs
        ]
        self._closed = False

    def run(self, feeds: Mapping[str, np.ndarray], *, check_finite: bool | None = None) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feeds: one numpy array per model input, by name.
            check_finite: scan float inputs for NaN/Inf (default: the session's `check_finite`).

        Returns:
            One array per model output, by name.

        Raises:
            InputError: a missing or unknown name, wrong dtype, rank or fixed dimension,
                inconsistent symbolic dimensions, or a NaN/Inf value; the field is named.
        """
        if self._closed:
            raise EdgeAgentError("this Session is closed; load the artifact again")
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a dict of input name to numpy array, got {type(feeds).__name__}")
        if feeds.keys() != self._names:
            self._raise_names(feeds)
        symbols: dict[str, tuple[int, str]] = {}
        scan = self.check_finite if check_finite is None else check_finite
        for name, dtype, rank, fixed, symbolic, floating in self._checks:
            value = feeds[name]
            if type(value) is not np.ndarray:
                raise InputError(f"input {name!r} is a {type(value).__name__}; pass a numpy array "
                                 f"(np.asarray(value, dtype=np.{dtype}))", field=name)
            if value.dtype != dtype:
                raise InputError(f"input {name!r} has dtype {value.dtype}, the model expects "
                                 f"{dtype}; cast it with .astype(np.{dtype})", field=name)
            if value.ndim != rank:
                raise InputError(f"input {name!r} has rank {value.ndim} (shape {value.shape}), the "
                                 f"model expects rank {rank}", field=name)
            for axis, size in fixed:
                if value.shape[axis] != size:
                    raise InputError(f"input {name!r} has size {value.shape[axis]} on axis {axis}, "
                                     f"the model fixes it to {size} (shape {value.shape})", field=name)
            for axis, symbol in symbolic:
                seen = symbols.setdefault(symbol, (value.shape[axis], name))
                if seen[0] != value.shape[axis]:
                    raise InputError(f"input {name!r} has {symbol}={value.shape[axis]} on axis {axis} "
                                     f"but input {seen[1]!r} has {symbol}={seen[0]}", field=name)
            if floating and scan and not np.isfinite(value).all():
                bad = np.argwhere(~np.isfinite(value))
                raise InputError(f"input {name!r} has {len(bad)} NaN or Inf value(s), first at index "
                                 f"{tuple(int(i) for i in bad[0])}", field=name)
        return self._run_impl(feeds)

    def _raise_names(self, feeds: Mapping[str, Any]) -> None:
        missing = sorted(self._names - feeds.keys())
        unknown = sorted(set(feeds) - self._names)
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise InputError(f"{' and '.join(parts)}; the model's inputs are {sorted(self._names)}",
                         field=(missing or unknown)[0])

    @abstractmethod
    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds."""

    def close(self) -> None:
        """Free the native resources; the session cannot run afterwards."""
        if not self._closed:
            self._closed = True
            self._close_impl()

    def _close_impl(self) -> None:  # noqa: B027 - optional hook
        """Release SDK objects."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """A compiler and runner for one SDK.

    Subclasses set `name`, `pip_extra` and their options: `CompileOptions` (what shapes the
    artifact: recipes, calibration, fusions) and `LoadOptions` (how it runs: threads, device,
    hints), two frozen dataclasses, so a setting always applies at the step that reads it.
    """

    name: ClassVar[str]
    pip_extra: ClassVar[str | None] = None
    CompileOptions: ClassVar[type] = NoOptions
    LoadOptions: ClassVar[type] = NoOptions
    # Modules the bench imports alone to measure this backend's import-only memory baseline.
    sdk_modules: ClassVar[tuple[str, ...]] = ()
    # Where this backend comes in the host target's preference order (lower first), for a machine
    # no profile describes; a target file states its own order.
    host_rank: ClassVar[int] = 100

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend can do here."""

    @abstractmethod
    def available(self) -> Availability:
        """Whether the SDK and a device are present; if not, why and how to install."""

    @abstractmethod
    def compile(self, ir: ModelIR, precision: Precision | str, *, calibration: Dataset | None = None,
                target: Any = None, workdir: str | os.PathLike | None = None,
                options: Any = None) -> Artifact:
        """Compile `ir` into an artifact folder `workdir` (a new temporary folder if None).

        `options` is a `CompileOptions` or a mapping of its fields."""

    @abstractmethod
    def load(self, artifact: Artifact, *, options: Any = None, target: Any = None) -> Session:
        """Open a verified artifact built by this backend (`options`: a `LoadOptions` or a mapping)."""

    def int8_recipes(self) -> list[tuple[str, dict[str, Any]]]:
        """INT8 variants worth measuring for `--precision auto`: (label, compile options) pairs."""
        return [("int8", {})]

    def device_options(self, device: str) -> dict[str, Any]:
        """The options (compile and load, flat) that put this backend on `device` (`cpu`, `gpu`,
        `gpu.1`, `npu`, … as `--device` takes them), checked against the devices present.

        Raises:
            BackendUnavailable: the device is absent here or this backend cannot use it; the
                message lists the devices present.
        """
        raise BackendUnavailable(f"backend {self.name!r} does not choose devices; its devices here: "
                                 f"{list(self.capabilities().devices)}")

    def compile_options(self, options: Any) -> Any:
        """Normalise compile options: None → defaults, a mapping → parsed, an instance → itself."""
        return _normalise_options(self.name, self.CompileOptions, options, "compile")

    def load_options(self, options: Any) -> Any:
        """Normalise load options: None → defaults, a mapping → parsed, an instance → itself."""
        return _normalise_options(self.name, self.LoadOptions, options, "load")

    def split_options(self, values: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sort a flat mapping (a target preset's `options`, `--option` on bench) into compile and load
        options by field name; a field both dataclasses have (a device) goes to both.

        Raises:
            InputError: a key neither dataclass has, naming both sets of fields.
        """
        compile_fields = {f.name for f in dataclasses.fields(self.CompileOptions)}
        load_fields = {f.name for f in dataclasses.fields(self.LoadOptions)}
        compile_values: dict[str, Any] = {}
        load_values: dict[str, Any] = {}
        for key, value in (values or {}).items():
            name = str(key).replace("-", "_")
            if name not in compile_fields | load_fields:
                raise InputError(f"unknown option {key!r} for backend {self.name!r}; compile options: "
                                 f"{sorted(compile_fields) or 'none'}, load options: {sorted(load_fields) or 'none'}",
                                 field=str(key))
            if name in compile_fields:
                compile_values[name] = value
            if name in load_fields:
                load_values[name] = value
        return compile_values, load_values

    def require_available(self) -> None:
        status = self.available()
        if not status:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {status.reason}. "
                                     f"{status.install_hint}".strip())

    def check_precision(self, precision: Precision | str) -> Precision:
        value = Precision.parse(precision)
        supported = self.capabilities().precisions
        if value not in supported:
            raise UnsupportedPrecision(f"backend {self.name!r} does not compile {value}; it "
                                       f"supports {[str(p) for p in supported]}")
        return value

    @staticmethod
    def new_workdir(workdir: str | os.PathLike | None) -> Path:
        if workdir is None:
            return Path(tempfile.mkdtemp(prefix="edgeagent-artifact-"))
        path = Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise InputError(f"workdir {path} is not empty; give a new or empty folder", field="workdir")
        return path


def _normalise_options(backend: str, cls: type, options: Any, when: str) -> Any:
    if options is None or isinstance(options, Mapping):
        try:
            return parse_options(cls, options)
        except InputError as exc:
            raise InputError(f"{backend} {when} options: {exc}", field=exc.field) from None
    if not isinstance(options, cls):
        raise InputError(f"{backend} takes {when} options of type {cls.__name__}, got {type(options).__name__}")
    return options


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend, or why it could not be imported."""

    name: str
    backend: Backend | None
    error: str | None = None

    def status(self) -> dict[str, Any]:
        """The row `edgeagent backends` prints."""
        if self.backend is None:
            return {"name": self.name, "available": False, "reason": self.error, "version": None,
                    "devices": [], "precisions": [], "install_hint": None}
        caps = self.backend.capabilities()
        avail = self.backend.available()
        return {"name": self.name, "available": avail.ok, "reason": avail.reason or None,
                "version": caps.sdk_version, "devices": list(caps.devices),
                "precisions": [str(p) for p in caps.precisions],
                "needs_calibration": [str(p) for p in caps.needs_calibration],
                "install_hint": avail.install_hint or None,
                "recipes": {k: list(v) for k, v in caps.recipes.items()}}


@functools.cache
def backend_entries() -> dict[str, BackendEntry]:
    """Every backend in the `edgeagent.backends` entry-point group, built-ins included.

    A backend whose module fails to import becomes an unavailable entry with the error.
    """
    entries: dict[str, BackendEntry] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in entries:
            continue  # the first registration wins, as importlib lists them
        try:
            cls = ep.load()
            backend = cls()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the rest
            entries[ep.name] = BackendEntry(ep.name, None, f"failed to load {ep.value}: "
                                            f"{type(exc).__name__}: {exc}")
        else:
            entries[ep.name] = BackendEntry(ep.name, backend)
    if not entries:
        raise BackendUnavailable("no backends are registered: edgeagent's package metadata is "
                                 "missing; install it with `pip install -e .` or `pip install edgeagent`")
    return dict(sorted(entries.items()))


def get_backend(name: str) -> Backend:
    """The backend registered as `name`.

    Raises:
        BackendUnavailable: unknown name (the valid ones are listed) or a plug-in that failed
            to import.
    """
    entries = backend_entries()
    entry = entries.get(str(name))
    if entry is None:
        raise BackendUnavailable(f"unknown backend {name!r}; registered backends: {sorted(entries)}")
    if entry.backend is None:
        raise BackendUnavailable(f"backend {name!r} is registered but {entry.error}")
    return entry.backend


def list_backends() -> list[dict[str, Any]]:
    """Status rows of every registered backend."""
    return [entry.status() for entry in backend_entries().values()]
