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

from .errors import ArtifactError, InternalError
from .ir import TensorSpec, _fsync_dir, sha256_file

MANIFEST = "manifest.json"
SCHEMA = "edgeagent.artifact/1"
MAX_MANIFEST_BYTES = 16 << 20


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
        return self.manifest.get("recipe", {})

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
        ArtifactError: no folder or manifest, a manifest that does not parse or has another
            schema, a listed file missing, outside the folder, a symlink, or changed.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"artifact {folder} is not a folder; build one with `edgeagent compile`")
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}; it is not an edgeagent artifact "
                            "(build one with `edgeagent compile`)")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} does not parse as JSON ({exc}); rebuild the artifact") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{manifest_path} has schema {found!r}, this edgeagent reads {SCHEMA!r}; "
                            "rebuild the artifact with this version")
    for key in ("backend", "precision", "files", "signature"):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path} lacks the field {key!r}; rebuild the artifact")
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{manifest_path} lists no files; rebuild the artifact")
    root = folder.resolve()
    for name, expected in files.items():
        rel = PurePosixPath(str(name))
        if rel.is_absolute() or ".." in rel.parts or "\\" in str(name):
            raise ArtifactError(f"artifact {folder}: file name {name!r} leaves the folder; refused")
        candidate = folder / rel
        if candidate.is_symlink() or not candidate.resolve().is_relative_to(root):
            raise ArtifactError(f"artifact {folder}: {name} is a symlink or leaves the folder; refused")
        if not candidate.is_file():
            raise ArtifactError(f"artifact {folder} is incomplete: {name} is missing; copy the "
                                "whole folder again")
        actual = sha256_file(candidate)
        if actual != expected:
            raise ArtifactError(f"artifact {folder}: {name} was modified (sha256 {actual[:12]}…, "
                                f"manifest says {str(expected)[:12]}…); refusing to load it. "
                                "Copy the artifact again or rebuild it")
    return Artifact(folder, manifest)


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





