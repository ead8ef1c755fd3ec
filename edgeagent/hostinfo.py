"""Facts about this machine and software stack, read without importing optional SDKs."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from ._proc import proc_field_bytes
from .backend import sdk_version

# Flags that decide which INT8 kernels are fast (DESIGN.md): x86 names from /proc/cpuinfo
# "flags", Arm names from "Features".
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx", "neon", "asimddot", "fma", "f16c")
SOFTWARE = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt", "torch", "transformers",
            "tokenizers")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            if info:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    return info


def _flag_set() -> set[str]:
    """The first processor's feature flags ("flags" on x86, "features" on Arm)."""
    info = _cpuinfo()
    return set((info.get("flags") or info.get("features") or "").split())


def cpu_flags() -> dict[str, bool]:
    """The INT8-relevant CPU features of this machine."""
    raw = _flag_set()
    machine = platform.machine().lower()
    flags = {
        "avx2": "avx2" in raw,
        "avx512f": "avx512f" in raw,
        "avx512_vnni": "avx512_vnni" in raw,
        "avx_vnni": "avx_vnni" in raw,
        "amx": any(f.startswith("amx") for f in raw),
        # ASIMD (NEON) is mandatory on aarch64; Linux lists it as "asimd".
        "neon": "neon" in raw or "asimd" in raw or machine in ("aarch64", "arm64"),
        "asimddot": "asimddot" in raw,
        "fma": "fma" in raw,
        "f16c": "f16c" in raw,
    }
    return flags


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def memory_bytes() -> int | None:
    return proc_field_bytes("/proc/meminfo", "MemTotal")


def software_versions() -> dict[str, str | None]:
    from . import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "edgeagent": __version__}
    versions.update({name: sdk_version(name) for name in SOFTWARE})
    return versions


def host_summary() -> dict[str, Any]:
    """Machine facts for `edgeagent doctor` and result provenance."""
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "memory_bytes": memory_bytes(),
        "software": software_versions(),
    }


def bf16_support() -> dict[str, Any]:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo."""
    raw = _flag_set()
    flags = {"avx512_bf16": "avx512_bf16" in raw, "amx_bf16": "amx_bf16" in raw}
    return {**flags, "native": any(flags.values())}


def resolve_bf16(bf16: bool | str) -> tuple[bool, str]:
    """(use bf16 autocast, why) for `bf16` = "auto", True or False; "auto" uses it where the CPU
    computes bf16 natively."""
    from .errors import InputError

    support = bf16_support()
    if bf16 == "auto":
        if support["native"]:
            return True, "auto: the CPU has " + " and ".join(k for k in ("avx512_bf16", "amx_bf16") if support[k])
        return False, "auto: the CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated and slower)"
    if bf16 is True or bf16 is False:
        return bf16, "asked"
    raise InputError(f"bf16 must be 'auto', True or False, got {bf16!r:.40}", field="bf16")
