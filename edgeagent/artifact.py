"""Artifacts: a compiled model as a folder of backend files plus a manifest with their hashes.

An artifact is what a user copies to a device. Opening one checks every listed file's sha256
before a backend reads anything, so a changed or swapped file is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import safeio
from .errors import ArtifactError, InputError, InternalError
from .ir import ModelIR, TensorSpec, _fsync_dir, sha256_file

MANIFEST = "manifest.json"
SCHEMA = "edgeagent.artifact/1"
MAX_MANIFEST_BYTES = 16 << 20
_SHA256 = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder. Build with a backend's `compile`, open with `open_artifact`."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"])

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def recipe(self) -> Mapping[str, Any]:
        return self.manifest.get("recipe") or {}

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(s) for s in self.manifest["signature"]["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.from_json(s) for s in self.manifest["signature"]["outputs"])

    @property
    def capabilities(self) -> Mapping[str, Any]:
        """Facts the backend wrote at compile time for callers (see `write_manifest`)."""
        value = self.manifest.get("capabilities")
        return value if isinstance(value, Mapping) else {}

    @property
    def batch_invariant(self) -> bool:
        """Whether an input's outputs are the same alone and in a batch with others (False when the
        backend did not say, as in artifacts built before it did)."""
        return self.capabilities.get("batch_invariant") is True

    @property
    def size_bytes(self) -> int:
        return sum((self.path / name).stat().st_size for name in self.manifest["files"])

    def file(self, name: str) -> Path:
        """Path of a listed file; refuses names the manifest does not list."""
        if name not in self.manifest["files"]:
            raise ArtifactError(f"artifact {self.path} lists no file {name!r}; it lists "
                                f"{sorted(self.manifest['files'])}")
        return self.path / name

    def load_model(self, name: str) -> ModelIR:
        """A listed ONNX file through `edgeagent.load` (every file-safety check, no onnx checker:
        artifacts may hold runtime-specific operators), whose external data files must all be
        listed in the manifest too, so that every byte a runtime reads was hash-checked.

        Raises:
            ArtifactError: the file is not listed, or references a data file the manifest does not list.
            ModelRejected: the model fails a safety check.
        """
        from .ir import load

        ir = load(self.file(name), full_check=False)
        unlisted = sorted(set(ir.external_files) - set(self.manifest["files"]))
        if unlisted:
            raise ArtifactError(f"artifact {self.path}: {name} reads external data {unlisted} that the manifest "
                                "does not list, so its hash was never checked; rebuild the artifact")
        return ir


def write_manifest(folder: Path, *, backend: str, precision: str, recipe: Mapping[str, Any],
                   source_sha256: str | None, signature: Mapping[str, Any], sdk: Mapping[str, Any],
                   capabilities: Mapping[str, Any], target: str | None = None, evidence: Any = None,
                   extra: Mapping[str, Any] | None = None) -> Artifact:
    """Hash every file in `folder` and write `manifest.json` atomically; return the Artifact.

    `capabilities` are the backend's facts about this artifact that callers act on, so they never
    reason from a recipe's name: `batch_invariant` (an input's outputs do not depend on its batch
    mates) and `int8_node_exclusion` (the backend can keep named nodes out of INT8).
    """
    missing = {"batch_invariant", "int8_node_exclusion"} - set(capabilities)
    if missing:
        raise InternalError(f"backend {backend!r} wrote a manifest without capabilities {sorted(missing)}")
    from . import __version__

    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ArtifactError(f"{path} is a symlink; artifacts hold regular files only")
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(folder).as_posix()] = sha256_file(path)
    manifest = {
        "schema": SCHEMA,
        "backend": backend,
        "precision": str(precision),
        "recipe": dict(recipe),
        "source": {"sha256": source_sha256},
        "files": files,
        "sdk": dict(sdk),
        "edgeagent": __version__,
        "target": target,
        "signature": dict(signature),
        "capabilities": dict(capabilities),
        "evidence": evidence,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return Artifact(folder, manifest)


def open_artifact(path: str | os.PathLike) -> Artifact:
    """Open an artifact folder and verify its manifest and every file's sha256.

    Raises:
        ArtifactError: no folder or manifest, a manifest that is a symlink, too large, does not parse
            (or nests too deep, or holds huge numbers), has another schema or fields of the wrong
            type; a listed file missing, outside the folder, a symlink, not a regular file, or changed.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"artifact {folder} is not a folder; build one with `edgeagent compile`")
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise ArtifactError(f"{folder} has no {MANIFEST}; it is not an edgeagent artifact "
                            "(build one with `edgeagent compile`)")
    manifest = safeio.read_json(
        manifest_path, what="manifest", max_bytes=MAX_MANIFEST_BYTES, follow_symlinks=False,
        error=lambda reason: ArtifactError(f"{manifest_path} {reason}; rebuild the artifact"))
    check_manifest(manifest, manifest_path)
    root = folder.resolve()
    for name, expected in manifest["files"].items():
        candidate = folder / name
        if any((folder / Path(*PurePosixPath(name).parts[:i])).is_symlink()
               for i in range(1, len(PurePosixPath(name).parts) + 1)) \
                or not candidate.resolve().is_relative_to(root):
            raise ArtifactError(f"artifact {folder}: {name} is a symlink or leaves the folder; refused")
        if not candidate.exists():
            raise ArtifactError(f"artifact {folder} is incomplete: {name} is missing; copy the "
                                "whole folder again")
        with safeio.open_regular(candidate, what="artifact file", follow_symlinks=False,
                                 error=lambda reason, name=name: ArtifactError(
                                     f"artifact {folder}: {name} {reason}")) as handle:
            actual = _sha256_handle(handle)
        if actual != expected:
            raise ArtifactError(f"artifact {folder}: {name} was modified (sha256 {actual[:12]}…, "
                                f"manifest says {str(expected)[:12]}…); refusing to load it. "
                                "Copy the artifact again or rebuild it")
    return Artifact(folder, manifest)


def _sha256_handle(handle) -> str:
    import hashlib

    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def check_manifest(manifest: Any, where: object) -> None:
    """Every field edgeagent reads from a manifest has the type it needs, so a hostile or broken
    manifest is an ArtifactError here and never a KeyError or TypeError later.

    Raises:
        ArtifactError: another schema, a missing field or one of the wrong type, naming it.
    """
    def bad(reason: str) -> ArtifactError:
        return ArtifactError(f"{where}: {reason}; rebuild the artifact")

    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{where} has schema {found!r}, this edgeagent reads {SCHEMA!r}; "
                            "rebuild the artifact with this version")
    for key in ("backend", "precision", "files", "signature"):
        if key not in manifest:
            raise bad(f"it lacks the field {key!r}")
    for key in ("backend", "precision"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise bad(f"field {key!r} must be a non-empty string, got {manifest[key]!r:.80}")
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise bad("it lists no files")
    for name, digest in files.items():
        check_file_name(name, where)
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _SHA256:
            raise bad(f"the sha256 of {name!r} is not 64 hex digits")
    signature = manifest["signature"]
    if not isinstance(signature, dict) or not all(isinstance(signature.get(k), list) for k in ("inputs", "outputs")):
        raise bad("field 'signature' must be an object with 'inputs' and 'outputs' lists")
    try:
        for spec in [*signature["inputs"], *signature["outputs"]]:
            TensorSpec.from_json(spec)
    except InputError as exc:
        raise bad(f"its signature is invalid: {exc}") from None
    for key in ("recipe", "capabilities", "source", "sdk"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise bad(f"field {key!r} must be an object, got {type(manifest[key]).__name__}")
    source = manifest.get("source") or {}
    if source.get("sha256") is not None and not isinstance(source["sha256"], str):
        raise bad("field 'source.sha256' must be a string")


def check_file_name(name: Any, where: object) -> None:
    """A manifest's file name: a relative POSIX path inside the folder, nothing a runtime could read
    differently (a backslash, a NUL, '..', an absolute path, empty parts).

    Raises:
        ArtifactError: any other name.
    """
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise ArtifactError(f"{where}: file name {name!r:.80} is not a file name; refused")
    parts = name.split("/")
    if "\x00" in name or "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(f"{where}: file name {name!r} leaves the folder or is not a plain relative "
                            "path; refused")


def build_atomically(out: str | os.PathLike, build: Callable[[Path], Artifact]) -> Artifact:
    """Run `build(staging)` in a temporary folder beside `out`, then move it into place.

    Nothing is left in `out` if the build fails. An existing artifact at `out` is replaced
    only after the new one is complete; any other non-empty folder is refused.

    Raises:
        ArtifactError: `out` is a non-empty folder that is not an artifact, or a file.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ArtifactError(f"output {out} exists and is a file; choose a folder path")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise ArtifactError(f"output folder {out} is not empty and is not an artifact; "
                                "choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        artifact = build(staging)
        if artifact.path.resolve() != staging.resolve():
            raise InternalError(f"the build wrote its artifact to {artifact.path}, not to its staging "
                                f"folder {staging}")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(staging, out)
        _fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(out, artifact.manifest)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)





