"""edgeagent: run agent models on constrained hardware.

One model IR (ONNX) passes through pluggable backends (ONNX Runtime, OpenVINO, TensorRT), each
with INT8 calibration, and a benchmark harness measures latency, memory and accuracy per target.

Importing edgeagent never imports torch or a backend SDK: heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name → module that defines it; resolved lazily (PEP 562) so `import edgeagent` is cheap.
_EXPORTS = {
    "load": "edgeagent.ir",
    "ModelIR": "edgeagent.ir",
    "TensorSpec": "edgeagent.ir",
    "export": "edgeagent.export",
    "export_hf": "edgeagent.export",
    "export_causal_lm": "edgeagent.causal",
    "distill": "edgeagent.distill",
    "compress": "edgeagent.compress",
    "Dataset": "edgeagent.data",
    "compile": "edgeagent.pipeline",
    "load_session": "edgeagent.pipeline",
    "Artifact": "edgeagent.artifact",
    "open_artifact": "edgeagent.artifact",
    "Backend": "edgeagent.backend",
    "Session": "edgeagent.backend",
    "Capabilities": "edgeagent.backend",
    "Availability": "edgeagent.backend",
    "Precision": "edgeagent.backend",
    "get_backend": "edgeagent.backend",
    "list_backends": "edgeagent.backend",
}

__all__ = sorted([*_EXPORTS, "errors", "generate", "__version__"])

if TYPE_CHECKING:
    from .artifact import Artifact, open_artifact
    from .backend import (Availability, Backend, Capabilities, Precision, Session, get_backend,
                          list_backends)
    from .data import Dataset
    from .export import export, export_hf
    from .ir import ModelIR, TensorSpec, load
    from .pipeline import compile, load_session


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in ("errors", "generate"):  # `edgeagent.generate(...)`: the package is callable
            return importlib.import_module(f"edgeagent.{name}")
        raise AttributeError(f"module 'edgeagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
