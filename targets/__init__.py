"""Hardware target profiles: one TOML file per device class, shipped as package data.

A target says what a device is (architecture, CPU features, cores, memory), how to deploy on
it (backends in preference order with device and precision presets), what it must meet
(budgets) and which CI runners carry it. `--target host` builds one from this machine.

Users add targets by path (`--target ./my-board.toml`) or with a folder on
EDGEAGENT_TARGETS_PATH (os.pathsep-separated); a user file with a built-in's name wins.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeagent import safeio
from edgeagent.errors import InputError

TARGETS_PATH_ENV = "EDGEAGENT_TARGETS_PATH"
HOST = "host"
KNOWN_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx", "neon", "asimddot", "fma", "f16c")
ARCHITECTURES = ("x86_64", "aarch64")
EMULATED_LABEL = "emulated: constraints only (speed not representative)"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
# Bounds on what a profile may state. They are far above any device's, and low enough that every
# value fits what receives it: RLIMIT_AS (2**63 overflows it), ONNX Runtime's thread pool (400,000
# threads crash it).
MAX_SIZE_BYTES = 2**50  # 1 PiB
MAX_CORES = 4096
MAX_THREADS = 1024
MAX_TARGET_FILE_BYTES = 1 << 20


class TargetError(InputError):
    """A target profile that cannot be used: names the file and the field."""


def parse_size(value: Any, *, where: str = "", field_name: str = "") -> int:
    """Bytes from an integer or a string such as "512MiB" or "8 GB", at most 1 PiB.

    Raises:
        TargetError: anything else, naming `where` and the field.
    """
    if isinstance(value, bool):
        raise TargetError(f"{where}: {field_name} must be a size such as \"512MiB\", got {value!r}",
                          field=field_name)
    if isinstance(value, int) and value > 0:
        size = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) and len(value) < 64 else None
        if not match or float(match.group(1)) <= 0:
            raise TargetError(f"{where}: {field_name} must be a positive size such as \"512MiB\" or "
                              f"\"8GiB\", got {value!r:.80}", field=field_name)
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if not 0 < size <= MAX_SIZE_BYTES:
        raise TargetError(f"{where}: {field_name} is {size} bytes; a size must be between 1 byte and 1 PiB",
                          field=field_name)
    return size


@dataclass(frozen=True)
class BackendPreset:
    """How a target deploys with one backend."""

    name: str
    device: str | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "precisions": list(self.precisions),
                "options": dict(self.options)}


@dataclass(frozen=True)
class Budgets:
    """What every cell on the target must meet; None means unchecked."""

    p90_latency_ms: float | None = None
    peak_memory_bytes: int | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None  # fraction: 0.01 is one point against fp32

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Target:
    """One device class."""

    name: str
    description: str
    architecture: str
    isa: tuple[str, ...] = ()
    isa_absent: tuple[str, ...] = ()
    cores: int = 1
    threads: int = 1
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    backends: tuple[BackendPreset, ...] = ()
    budgets: Budgets = Budgets()
    runs_on: tuple[str, ...] = ()
    source: str | None = None

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def preset(self, backend: str) -> BackendPreset | None:
        return next((b for b in self.backends if b.name == backend), None)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "architecture": self.architecture,
                "isa": list(self.isa), "isa_absent": list(self.isa_absent), "cores": self.cores,
                "threads": self.threads, "memory_bytes": self.memory_bytes,
                "memory_limit_bytes": self.memory_limit_bytes,
                "backends": [b.to_json() for b in self.backends], "budgets": self.budgets.to_json(),
                "runs_on": list(self.runs_on), "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(name=data["name"], description=data.get("description", ""),
                   architecture=data["architecture"], isa=tuple(data.get("isa", ())),
                   isa_absent=tuple(data.get("isa_absent", ())), cores=int(data.get("cores", 1)),
                   threads=int(data.get("threads", 1)), memory_bytes=data.get("memory_bytes"),
                   memory_limit_bytes=data.get("memory_limit_bytes"),
                   backends=tuple(BackendPreset(b["name"], b.get("device"), tuple(b.get("precisions", ())),
                                                dict(b.get("options", {})))
                                  for b in data.get("backends", ())),
                   budgets=Budgets(**(data.get("budgets") or {})), runs_on=tuple(data.get("runs_on", ())),
                   source=data.get("source"))


def _require(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
             *, optional: bool = False) -> Any:
    if key not in table:
        if optional:
            return None
        raise TargetError(f"{where}: missing required field {key!r}", field=key)
    value = table[key]
    # TOML booleans are ints to isinstance; a budget of `true` is a typo, not 1.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TargetError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {value!r}", field=key)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_target(data: Mapping[str, Any], *, source: str) -> Target:
    """Validate one profile's table.

    Raises:
        TargetError: a missing, mistyped or out-of-range field, named with the file.
    """
    known = {"name", "description", "architecture", "isa", "isa_absent", "cores", "threads", "memory",
             "memory_limit", "backends", "budgets", "runs_on"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"{source}: unknown field(s) {unknown}; valid fields: {sorted(known)}",
                          field=unknown[0])
    name = _require(data, "name", str, source)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name) or name == HOST:
        raise TargetError(f"{source}: field 'name' must be lowercase letters, digits, '.', '_' or '-' "
                          f"(and not {HOST!r}), got {name!r}", field="name")
    arch = _require(data, "architecture", str, source)
    if arch not in ARCHITECTURES:
        raise TargetError(f"{source}: field 'architecture' must be one of {list(ARCHITECTURES)}, got "
                          f"{arch!r}", field="architecture")
    isa = tuple(_require(data, "isa", list, source, optional=True) or ())
    isa_absent = tuple(_require(data, "isa_absent", list, source, optional=True) or ())
    for key, values in (("isa", isa), ("isa_absent", isa_absent)):
        bad = [v for v in values if v not in KNOWN_ISA]
        if bad:
            raise TargetError(f"{source}: field {key!r} has unknown feature(s) {bad}; known: "
                              f"{list(KNOWN_ISA)}", field=key)
    cores = _require(data, "cores", int, source)
    threads = _require(data, "threads", int, source)
    if not 1 <= cores <= MAX_CORES:
        raise TargetError(f"{source}: field 'cores' must be between 1 and {MAX_CORES}, got {cores}", field="cores")
    if not 1 <= threads <= min(4 * cores, MAX_THREADS):
        raise TargetError(f"{source}: field 'threads' must be between 1 and 4 × cores (at most {MAX_THREADS}), "
                          f"got cores={cores}, threads={threads}", field="threads")
    memory = parse_size(_require(data, "memory", (str, int), source), where=source, field_name="memory")
    limit_raw = _require(data, "memory_limit", (str, int), source, optional=True)
    limit = parse_size(limit_raw, where=source, field_name="memory_limit") if limit_raw is not None else None
    if limit is not None and limit > memory:
        raise TargetError(f"{source}: field 'memory_limit' ({limit_raw}) exceeds 'memory'", field="memory_limit")
    presets = []
    for i, table in enumerate(_require(data, "backends", list, source)):
        where = f"{source}: backends[{i}]"
        if not isinstance(table, dict):
            raise TargetError(f"{where} must be a table with 'name'", field="backends")
        extra = sorted(set(table) - {"name", "device", "precisions", "options"})
        if extra:
            raise TargetError(f"{where}: unknown field(s) {extra}", field=extra[0])
        precisions = tuple(_require(table, "precisions", list, where, optional=True) or ("fp32", "int8"))
        bad = [p for p in precisions if p not in ("fp32", "fp16", "int8", "int4")]
        if bad:
            raise TargetError(f"{where}: field 'precisions' has {bad}; valid: fp32, fp16, int8, int4 (decoders only)",
                              field="precisions")
        if not all(isinstance(p, str) for p in precisions):
            raise TargetError(f"{where}: field 'precisions' must be a list of strings", field="precisions")
        preset = BackendPreset(_require(table, "name", str, where),
                               _require(table, "device", str, where, optional=True), precisions,
                               dict(_require(table, "options", dict, where, optional=True) or {}))
        _check_preset_options(preset, where)
        presets.append(preset)
    if not presets:
        raise TargetError(f"{source}: field 'backends' must list at least one backend", field="backends")
    budgets = _parse_budgets(_require(data, "budgets", dict, source, optional=True) or {}, source)
    runs_on = _require(data, "runs_on", list, source)
    if not runs_on or not all(isinstance(x, str) for x in runs_on):
        raise TargetError(f"{source}: field 'runs_on' must be a non-empty list of runner labels",
                          field="runs_on")
    return Target(name=name, description=_require(data, "description", str, source), architecture=arch,
                  isa=isa, isa_absent=isa_absent, cores=cores, threads=threads, memory_bytes=memory,
                  memory_limit_bytes=limit, backends=tuple(presets), budgets=budgets,
                  runs_on=tuple(runs_on), source=source)


def _parse_budgets(table: Mapping[str, Any], source: str) -> Budgets:
    where = f"{source}: budgets"
    extra = sorted(set(table) - {"p90_latency_ms", "peak_memory", "min_accuracy", "max_accuracy_drop"})
    if extra:
        raise TargetError(f"{where}: unknown field(s) {extra}; valid: p90_latency_ms, peak_memory, "
                          "min_accuracy, max_accuracy_drop", field=extra[0])
    values: dict[str, Any] = {}
    # (lowest, highest, whether the lowest itself is allowed): a p90 of 0 ms or an accuracy floor of
    # 0 gates nothing, NaN compares false with everything and so passes every check.
    ranges = {"p90_latency_ms": (0.0, 3.6e6, False, "a positive number of milliseconds"),
              "min_accuracy": (0.0, 1.0, False, "a fraction in (0, 1]"),
              "max_accuracy_drop": (0.0, 1.0, True, "a fraction in [0, 1]")}
    for key, (low, high, low_ok, noun) in ranges.items():
        raw = _require(table, key, (int, float), where, optional=True)
        if raw is None:
            continue
        if not math.isfinite(raw) or not (low <= raw if low_ok else low < raw) or raw > high:
            raise TargetError(f"{where}: field {key!r} must be {noun}, got {raw!r}", field=key)
        values[key] = float(raw)
    if "peak_memory" in table:
        values["peak_memory_bytes"] = parse_size(table["peak_memory"], where=where, field_name="peak_memory")
    return Budgets(**values)


def _check_preset_options(preset: BackendPreset, where: str) -> None:
    """A preset's options must be ones its backend takes, of the right type and range: checked when
    the profile is read, not when a cell fails with a TypeError."""
    from edgeagent.backend import backend_entries

    entry = backend_entries().get(preset.name)
    if entry is None or entry.backend is None:
        return  # a backend not installed here: its options are checked where it is
    backend = entry.backend
    try:
        compile_values, load_values = backend.split_options(preset.options)
        backend.compile_options(compile_values)
        backend.load_options(load_values)
    except InputError as exc:
        raise TargetError(f"{where}: options: {exc}", field=exc.field or "options") from None


def load_target_file(path: str | os.PathLike) -> Target:
    """Read and validate one profile (a regular file of at most 1 MiB).

    Raises:
        TargetError: not a readable regular file (a FIFO, `/dev/zero`, a folder), not UTF-8, not
            valid TOML, or an invalid field, naming the file.
    """
    path = Path(path)
    text = safeio.read_text(path, max_bytes=MAX_TARGET_FILE_BYTES, what="target file",
                            error=lambda reason: TargetError(f"target file {path} {reason}", field=str(path)))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path} is not valid TOML: {exc}", field=str(path)) from None
    except RecursionError:
        raise TargetError(f"{path} nests arrays or tables too deep to read", field=str(path)) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise TargetError(f"{path} holds a value that cannot be read: {exc}", field=str(path)) from None
    return parse_target(data, source=str(path))


def _folders() -> list[Path]:
    folders = [Path(p) for p in os.environ.get(TARGETS_PATH_ENV, "").split(os.pathsep) if p]
    return [*folders, Path(__file__).parent]  # user folders first: their files override built-ins


@functools.cache
def _cached(path: str, mtime_ns: int) -> Target:
    return load_target_file(path)


def list_targets(*, errors: list[TargetError] | None = None) -> dict[str, Target]:
    """Every target on EDGEAGENT_TARGETS_PATH and the built-ins, by name (first one wins).

    A file that does not parse is left out (one broken user file must not hide the built-ins);
    its error is appended to `errors` when given, else printed to stderr as a warning.
    """
    found: dict[str, Target] = {}
    for folder in _folders():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                target = _cached(str(path), path.stat().st_mtime_ns)
            except (TargetError, OSError) as exc:
                error = exc if isinstance(exc, TargetError) else TargetError(f"cannot read {path}: {exc}")
                if errors is None:
                    print(f"warning: skipping target file {path}: {error}", file=sys.stderr)
                else:
                    errors.append(error)
                continue
            found.setdefault(target.name, target)
    return dict(sorted(found.items()))


def get_target(name_or_path: str | os.PathLike | Target | None) -> Target:
    """A target by name, by path to a `.toml`, or `host` (also for None).

    Raises:
        TargetError: an unknown name (the valid ones are listed) or an invalid file.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    if name_or_path is None or str(name_or_path) == HOST:
        return host_target()
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_target_file(text)
    broken: list[TargetError] = []
    targets = list_targets(errors=broken)
    if text not in targets:
        unreadable = "".join(f"; skipped {exc}" for exc in broken)
        raise TargetError(f"unknown target {text!r}; valid targets: {[HOST, *targets]} or a path to a "
                          f".toml profile{unreadable}", field="target")
    return targets[text]


def host_target() -> Target:
    """A target describing this machine, with the backends usable here in preference order."""
    from edgeagent.backend import backend_entries
    from edgeagent.hostinfo import cpu_flags, memory_bytes, usable_cpus

    flags = cpu_flags()
    # Preference: each backend's host_rank (TensorRT where a GPU makes it usable, then ONNX Runtime,
    # the core dependency, then the rest), the name breaking ties, so the order never depends on
    # which plug-ins happen to sort first.
    usable = sorted((entry.backend for entry in backend_entries().values()
                     if entry.backend is not None and entry.backend.available()),
                    key=lambda backend: (backend.host_rank, backend.name))
    cpus = usable_cpus()
    # INT8 first: it is what an agent runs on a device; the bench measures both either way.
    return Target(name=HOST, description=f"this machine ({platform.node() or 'unknown host'})",
                  architecture=normalise_arch(platform.machine()),
                  isa=tuple(k for k in KNOWN_ISA if flags.get(k)), cores=cpus, threads=cpus,
                  memory_bytes=memory_bytes(),
                  backends=tuple(BackendPreset(b.name, precisions=("int8", "fp32")) for b in usable),
                  runs_on=("self-hosted",))


def normalise_arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@dataclass(frozen=True)
class Fit:
    """How this machine relates to a target: native, emulated (constraints only) or skipped."""

    mode: str  # "native" | "emulated" | "skipped"
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason}


def fit(target: Target, host: Target | None = None) -> Fit:
    """Whether `target` runs here natively, only as constraints, or not at all.

    Same architecture without a required feature → skipped: the kernels a backend picks would
    not be the device's. Another architecture, or a host with features the device lacks
    (`isa_absent`) → emulated: threads and memory are the device's, speed is not.
    """
    host = host or host_target()
    if target.name == HOST:
        return Fit("native", "this machine")
    host_flags = set(host.isa)
    if target.architecture == host.architecture:
        missing = [f for f in target.isa if f not in host_flags]
        if missing:
            return Fit("skipped", f"target {target.name} needs CPU feature(s) {missing} that this "
                                  f"{host.architecture} CPU lacks")
        extra = [f for f in target.isa_absent if f in host_flags]
        if extra:
            return Fit("emulated", f"this CPU has {extra}, which {target.name} lacks: {EMULATED_LABEL}")
        if target.threads > host.cores:
            return Fit("emulated", f"{target.name} uses {target.threads} threads, this machine has "
                                   f"{host.cores} CPUs: {EMULATED_LABEL}")
        return Fit("native", f"{host.architecture} with {list(target.isa) or 'no special'} features")
    return Fit("emulated", f"{target.name} is {target.architecture}, this machine is "
                           f"{host.architecture}: {EMULATED_LABEL}")


def detect() -> dict[str, Any]:
    """This machine as `targets detect` reports it, with how each known target fits here."""
    from edgeagent.backend import list_backends
    from edgeagent.backends.tensorrt import nvidia_gpus
    from edgeagent.hostinfo import cpu_flags, cpu_model, memory_bytes, usable_cpus

    host = host_target()
    backends = list_backends()
    gpus = [{"vendor": "nvidia", "name": name} for name in nvidia_gpus()]
    for row in backends:  # OpenVINO sees Intel GPUs and NPUs that /proc does not name
        gpus += [{"vendor": "intel", "name": d, "backend": row["name"]} for d in row["devices"]
                 if row["available"] and (d.startswith("GPU") or d.startswith("NPU"))]
    flags = cpu_flags()
    fits = {name: fit(target, host).to_json() for name, target in list_targets().items()}
    return {
        "architecture": host.architecture, "cpu": cpu_model(),
        "cpu_flags": {k: flags.get(k, False) for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx",
                                                       "neon", "asimddot")},
        "cores": usable_cpus(), "memory_bytes": memory_bytes(), "gpus": gpus,
        "backends": {row["name"]: row["available"] for row in backends},
        "targets": fits,
        "native_targets": [n for n, f in fits.items() if f["mode"] == "native"],
    }
