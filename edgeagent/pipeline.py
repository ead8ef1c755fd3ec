"""The public compile and load functions: model → artifact → session."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .artifact import Artifact, build_atomically, open_artifact
from .backend import Backend, Precision, Session, get_backend
from .data import Dataset, as_dataset, finite_samples, synthetic_feeds
from .errors import CalibrationError, EdgeAgentError, InputError, InternalError, UnsupportedModel
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
        The verified Artifact: opened as a user would and run once on a calibration sample (else
        synthetic inputs) before it is declared built.

    Raises:
        ModelRejected: the model file is unsafe or invalid.
        BackendUnavailable: the backend is unknown or its SDK or device is missing.
        UnsupportedPrecision: the backend does not compile that precision.
        CalibrationError: INT8 calibration data is missing, does not match the model, or holds NaN
            or Inf; or an INT8 artifact answers NaN or Inf.
        UnsupportedModel: the backend cannot convert or build part of the model, or the artifact
            does not load or run here.
        ArtifactError: `out` is a non-empty folder that is not an artifact.
        InputError: options or arguments the backend refuses.
    """
    ir = model if isinstance(model, ModelIR) else load(model)
    chosen = get_backend(backend)
    chosen.require_available()
    precision = chosen.check_precision(precision)
    dataset = as_dataset(calibration, [s.name for s in ir.inputs])
    if dataset is not None:
        dataset = finite_samples(dataset)

    def build(workdir: Path) -> Artifact:
        artifact = chosen.compile(ir, precision, calibration=dataset, target=target, workdir=workdir,
                                  options=options)
        verify_artifact(chosen, artifact, ir, dataset, target=target)
        return artifact

    if out is None:
        return build(chosen.new_workdir(None))
    return build_atomically(out, build)


def verify_artifact(backend: Backend, artifact: Artifact, ir: ModelIR, calibration: Dataset | None, *,
                    target: Any = None) -> None:
    """Open a freshly built artifact as `load_session` would and run it once, so that an artifact
    that cannot load here (an opset the runtime lacks) or answers NaN/Inf on finite inputs (scales
    from extreme calibration values) is never declared built.

    Raises:
        UnsupportedModel: the artifact does not load or run, or gives non-finite outputs.
        CalibrationError: an INT8 artifact gives non-finite outputs on a calibration sample.
    """
    sample = None
    if calibration is not None:
        try:
            sample = next(iter(calibration), None)
        except InputError:  # a one-shot stream the compile already read: synthetic inputs instead
            sample = None
    feeds = sample if sample is not None else synthetic_feeds(artifact.inputs)
    try:
        with backend.load(open_artifact(artifact.path), target=target) as session:
            if artifact.capabilities.get("decoder"):
                from .generate.decoder import probe  # a prefill and a decode step, the cache carried

                outputs = probe(session, ir.metadata)
            else:
                outputs = session.run(feeds)
    except InternalError:
        raise
    except Exception as exc:  # the SDK's own error types too: what fails here would fail every user
        detail = str(exc) if isinstance(exc, EdgeAgentError) else f"{type(exc).__name__}: {exc}"
        raise UnsupportedModel(f"{backend.name} built a {artifact.precision} artifact that does not load or run "
                               f"here, so it was not kept: {detail}") from None
    broken = sorted(name for name, value in outputs.items()
                    if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.isfinite(value).all())
    if broken:
        where = "a calibration sample" if sample is not None else "synthetic inputs"
        message = (f"the {backend.name} {artifact.precision} artifact answers NaN or Inf in {broken} on {where} "
                   "whose values are finite, so it was not kept")
        if artifact.precision == "int8":
            raise CalibrationError(f"{message}: the calibration data probably holds extreme values that "
                                   "overflow the INT8 scales; give representative samples")
        raise UnsupportedModel(message)


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
