"""Engine identity and the engine cache (no GPU needed).

A TensorRT engine runs only on the GPU model and TensorRT version it was built with, and an
engine file is code: deserializing it runs whatever it holds. So edgeagent deserializes only
engines it built itself, and only when their identity — source IR, TensorRT version, GPU name
and compute capability, precision and build flags — matches the machine and the request. An
engine whose identity or hash does not match is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.ir import sha256_file
from edgeagent.paths import edgeagent_home

PLAN_FILE = "engine.plan"
IDENTITY_FILE = "identity.json"
TIMING_CACHE_FILE = "timing.cache"


@dataclass(frozen=True)
class EngineIdentity:
    """Everything an engine depends on. Two engines with equal identities are interchangeable."""

    ir_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    flags: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = json.loads(json.dumps(dict(self.flags), sort_keys=True, default=str))
        return data

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON of every field."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineIdentity:
        return cls(**{k: data[k] for k in ("ir_sha256", "tensorrt", "gpu", "compute_capability", "precision")},
                   flags=dict(data.get("flags", {})))


def mismatches(recorded: Mapping[str, Any], current: EngineIdentity) -> list[str]:
    """What differs between an engine's recorded identity and what is asked for here, in words."""
    have = current.to_json()
    names = {"ir_sha256": "source model", "tensorrt": "TensorRT version", "gpu": "GPU",
             "compute_capability": "compute capability", "precision": "precision", "flags": "build flags"}
    reasons = []
    for name, label in names.items():
        if recorded.get(name) != have[name]:
            if name == "flags":
                was, now = dict(recorded.get("flags") or {}), have["flags"]
                changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                reasons.append(f"{label} differ ({', '.join(changed)})")
            else:
                reasons.append(f"{label} {recorded.get(name)!r} != {have[name]!r}")
    return reasons


class EngineCache:
    """Engines edgeagent built, by identity key, under `$EDGEAGENT_HOME/tensorrt/engines`.

    Each entry holds the plan, the files built with it (timing cache, calibration cache) and
    identity.json (the identity plus the plan's sha256). `get` returns an entry only if its identity equals the request and the plan's hash
    matches; anything else is deleted, so that it is rebuilt.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if root is None:
            root = edgeagent_home() / "tensorrt" / "engines"
        self.root = Path(root)

    def entry(self, identity: EngineIdentity) -> Path:
        return self.root / identity.key

    def get(self, identity: EngineIdentity) -> Path | None:
        """The verified entry folder for `identity`, or None (a bad entry is removed)."""
        folder = self.entry(identity)
        record_path = folder / IDENTITY_FILE
        if not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            valid = (not mismatches(record.get("identity", {}), identity)
                     and (folder / PLAN_FILE).is_file()
                     and sha256_file(folder / PLAN_FILE) == record.get("plan_sha256"))
        except (OSError, ValueError, TypeError):
            valid = False
        if not valid:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return folder

    @staticmethod
    def built_with(entry: Path) -> dict[str, bytes]:
        """The files stored beside an entry's plan."""
        return {p.name: p.read_bytes() for p in sorted(entry.iterdir())
                if p.is_file() and p.name not in (PLAN_FILE, IDENTITY_FILE)}

    def put(self, identity: EngineIdentity, plan: bytes, files: Mapping[str, bytes] | None = None) -> Path:
        """Store an engine and the files built with it ({name: bytes}) atomically (a half-written
        entry is never visible)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.entry(identity)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            (staging / PLAN_FILE).write_bytes(plan)
            for name, content in (files or {}).items():
                if Path(name).name != name or name in (PLAN_FILE, IDENTITY_FILE):
                    raise ValueError(f"cache entry file {name!r} must be a plain name other than the plan's")
                (staging / name).write_bytes(content)
            record = {"identity": identity.to_json(), "key": identity.key,
                      "plan_sha256": hashlib.sha256(plan).hexdigest()}
            (staging / IDENTITY_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final
