"""TensorRT backend entry: reports whether TensorRT and an NVIDIA GPU are present.

TensorRT's libraries come from NVIDIA's package index (PyPI holds a stub that downloads from
it), so on machines without it this backend lists itself as unavailable with the reason and
the install hint, and the rest of edgeagent is unaffected. The engine builder and runner
(explicit-QDQ INT8, optimization profiles, engine cache) are tracked in issue 6 and are not
part of this module yet: compile and load refuse with a clear message instead of pretending.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeagent.backend import (Availability, Backend, Capabilities, Precision, module_importable,
                               sdk_version)
from edgeagent.errors import BackendUnavailable

INSTALL_HINT = ("pip install 'edgeagent[tensorrt]' --extra-index-url https://pypi.nvidia.com "
                "on a machine with an NVIDIA GPU and driver")


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


class TensorRTBackend(Backend):
    """NVIDIA TensorRT: fp32, fp16 and explicit-QDQ int8 engines (GPU only)."""

    name = "tensorrt"
    pip_extra = "tensorrt"
    sdk_modules = ("tensorrt",)

    def capabilities(self) -> Capabilities:
        gpus = nvidia_gpus()
        return Capabilities(
            name=self.name, devices=tuple(f"GPU:{i}" for i in range(len(gpus))),
            precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
            needs_calibration=(Precision.INT8,), pip_extra=self.pip_extra,
            sdk_version=sdk_version("tensorrt") or sdk_version("tensorrt-cu12") or sdk_version("tensorrt_libs"),
            recipes={"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("qdq",)})

    def available(self) -> Availability:
        if not module_importable("tensorrt"):
            return Availability(False, "the tensorrt Python package is not installed (it comes from "
                                "NVIDIA's index, not PyPI)", INSTALL_HINT)
        if not nvidia_gpus():
            return Availability(False, "no NVIDIA GPU is visible (/proc/driver/nvidia/gpus is empty)",
                                "run on a machine with an NVIDIA GPU and driver")
        return Availability(False, "edgeagent's TensorRT engine builder is not implemented yet "
                            "(tracked in issue 6)", "use the onnxruntime or openvino backend meanwhile")

    def compile(self, ir, precision, *, calibration=None, target=None, workdir=None, options=None):
        self.check_precision(precision)
        self.require_available()
        raise BackendUnavailable("tensorrt compile is not implemented yet (issue 6)")  # pragma: no cover

    def load(self, artifact, *, options: Any = None, target: Any = None):
        self.require_available()
        raise BackendUnavailable("tensorrt load is not implemented yet (issue 6)")  # pragma: no cover
