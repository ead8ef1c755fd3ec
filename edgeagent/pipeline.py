"""The public compile and load functions: model → artifact → session."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .artifact import Artifact, build_atomically, open_artifact
from .backend import Precision, Session, get_backend
from .data import Dataset, as_dataset
from .ir import ModelIR, load


def compile(model: ModelIR | str | os.PathLike, backend: str = "onnxruntime",  # noqa: A001
            precision: Precision | str = "fp32", *,
            calibration: Dataset | Iterable | str | os.PathLike | None = None,
            target: Any = None, out: str | os.PathLike | None = None,
            options: Any = None) -> Artifact:
    """Compile a model for one backend and precision into an artifact folder.

    Args:
        model: a ModelIR, or a path that `edgeagent.load` accepts.
        backend: registry name (default "onnxruntime").
        precision: fp32, fp16 or int8 (default fp32).
        calibration: a Dataset, an iterable of feed dicts or an `.npz` path (default None).
        target: a Target; its name goes into the manifest and its threads into loading.
        out: the artifact folder, written atomically (default: a new temporary folder).
        options: the backend's options dataclass, or a mapping of its fields.

    Returns:
        The verified Artifact.

    Raises:
        ModelRejected: the model file is unsafe or invalid.
        BackendUnavailable: the backend is unknown or its SDK or device is missing.
        UnsupportedPrecision: the backend does not compile that precision.
        CalibrationError: INT8 calibration data is missing or does not match the model.
        UnsupportedModel: the backend cannot convert or build part of the model.
        ArtifactError: `out` is a non-empty folder that is not an artifact.
        InputError: options or arguments the backend refuses.
    """
    ir = model if isinstance(model, ModelIR) else load(model)
    chosen = get_backend(backend)
    chosen.require_available()
    precision = chosen.check_precision(precision)
    dataset = as_dataset(calibration, [s.name for s in ir.inputs])

    def build(workdir: Path) -> Artifact:
        return chosen.compile(ir, precision, calibration=dataset, target=target, workdir=workdir,
                              options=options)

    if out is None:
        return build(chosen.new_workdir(None))
    return build_atomically(out, build)


def load_session(artifact: Artifact | str | os.PathLike, *, options: Any = None,
                 target: Any = None) -> Session:
    """Verify an artifact and open it with the backend that built it.

    Args:
        artifact: an Artifact or its folder.
        options: the backend's runtime options (e.g. threads).
        target: a Target supplying thread settings.

    Raises:
        ArtifactError: a missing, malformed or modified artifact.
        BackendUnavailable: the backend that built it is not usable here.
    """
    verified = open_artifact(artifact.path if isinstance(artifact, Artifact) else artifact)
    backend = get_backend(verified.backend)
    return backend.load(verified, options=options, target=target)
