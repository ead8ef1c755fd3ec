"""ModelIR: an ONNX file, its signature and metadata, loaded only after it is proven safe.

`load(path)` is the only way a model file enters edgeagent. Before onnx's checker or any
runtime touches the weights it checks what has historically been exploitable in ONNX files:
external-data locations that escape the model's folder (onnx and ONNX Runtime path-traversal
CVEs), symlinks, offsets and lengths past the end of the data file, oversized files and
malformed protobuf.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import ModelRejected

DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3  # protobuf cannot hold more; bigger models use external data
DEFAULT_MAX_EXTERNAL_BYTES = 32 * 1024**3
UNKNOWN_DIM = "?"
# Keys edgeagent computes on load; they are never written into metadata_props.
COMPUTED_METADATA = ("sha256", "opset")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, numpy dtype name and shape (ints fixed, strings symbolic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]),
                   tuple(d if isinstance(d, str) else int(d) for d in data["shape"]))


@dataclass(frozen=True)
class ModelIR:
    """A validated ONNX model on disk. Build it with `edgeagent.load`, never directly."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, str]
    opset: int
    sha256: str
    external_files: tuple[str, ...] = field(default=())

    @property
    def labels(self) -> list[str] | None:
        """Class labels stored under metadata key `labels` (a JSON list), if any."""
        raw = self.metadata.get("labels")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return [str(v) for v in value] if isinstance(value, list) else None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size + sum(
            (self.path.parent / f).stat().st_size for f in self.external_files)

    def proto(self, *, load_weights: bool = True):
        """The ModelProto; weights from external data are loaded unless `load_weights=False`."""
        import onnx

        return onnx.load(str(self.path), load_external_data=load_weights)

    def signature(self) -> dict[str, list[dict[str, Any]]]:
        return {"inputs": [s.to_json() for s in self.inputs],
                "outputs": [s.to_json() for s in self.outputs]}

    def save(self, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None) -> ModelIR:
        """Write a copy (atomically) with `metadata` merged into metadata_props; load it back.

        Args:
            path: destination `.onnx` file; its external data, if any, goes beside it.
            metadata: keys to add or replace (None: keep the current ones).

        Raises:
            ModelRejected: the written file does not load back.
        """
        proto = self.proto()
        merged = {k: v for k, v in self.metadata.items() if k not in COMPUTED_METADATA}
        merged.update(metadata or {})
        set_metadata(proto, merged)
        return save_proto(proto, path)


def set_metadata(proto, metadata: Mapping[str, str]) -> None:
    """Replace a ModelProto's metadata_props (computed keys are dropped)."""
    import onnx

    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        if key in COMPUTED_METADATA:
            continue
        if not isinstance(value, str):
            value = json.dumps(value)
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def save_proto(proto, path: str | os.PathLike, *, external_data: bool | None = None,
               full_check: bool = True) -> ModelIR:
    """Save a ModelProto atomically and return it loaded (and validated) through `load`.

    Files are written in a temporary folder beside the destination and renamed into place,
    external data first, so a reader never sees a half-written model.

    Args:
        proto: the model.
        path: destination `.onnx` file.
        external_data: store weights in `<name>.data`; None decides by size (protobuf's 2 GiB).
        full_check: passed to `load` (False for graphs with runtime-specific operators).
    """
    import onnx

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = proto.ByteSize() > DEFAULT_MAX_MODEL_BYTES - (64 << 20)
    data_name = dest.name + ".data"
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        staged_model = staging / dest.name
        if external_data:
            onnx.save_model(proto, str(staged_model), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        else:
            onnx.save_model(proto, str(staged_model))
        for staged in sorted(staging.iterdir(), key=lambda p: p.name == dest.name):
            _fsync(staged)
            os.replace(staged, dest.parent / staged.name)
        _fsync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(dest, full_check=full_check)


def load(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
         max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES, full_check: bool = True) -> ModelIR:
    """Load an ONNX model after checking it is safe and valid.

    Args:
        path: an `.onnx` file, or a folder holding exactly one.
        max_bytes: cap on the `.onnx` file itself (default 2 GiB).
        max_external_bytes: cap on all external data together (default 32 GiB).
        full_check: run `onnx.checker.check_model(full_check=True)` (default True). Artifacts
            holding runtime-specific operators (ONNX Runtime contrib ops) load with False; every
            file-safety check still runs.

    Returns:
        The ModelIR with its signature, metadata and sha256 (of the model and its data files).

    Raises:
        ModelRejected: missing file, too large, malformed protobuf, unsafe external data
            (escapes the folder, symlink, out-of-range offset or length) or a failed check.
    """
    model_path = _resolve_model_path(Path(path))
    size = model_path.stat().st_size
    if size > max_bytes:
        raise ModelRejected(model_path, f"file is {size} bytes, over the cap of {max_bytes}; "
                            "store large weights as external data or raise max_bytes")
    proto = _parse(model_path)
    external = check_external_data(proto, model_path, max_external_bytes=max_external_bytes)
    if full_check:
        _run_checker(model_path)
    sha256 = _sha256_files([model_path, *(model_path.parent / f for f in external)])
    return ModelIR(
        path=model_path,
        inputs=tuple(_specs(proto.graph.input, exclude={i.name for i in proto.graph.initializer})),
        outputs=tuple(_specs(proto.graph.output)),
        metadata=MappingProxyType(_metadata(proto, sha256)),
        opset=_default_opset(proto),
        sha256=sha256,
        external_files=tuple(external),
    )


def _resolve_model_path(path: Path) -> Path:
    if not path.exists():
        raise ModelRejected(path, "no such file; check the path")
    if path.is_dir():
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) != 1:
            raise ModelRejected(path, f"folder holds {len(candidates)} .onnx files; pass the file itself")
        path = candidates[0]
    if not path.is_file():
        raise ModelRejected(path, "not a regular file")
    return path.resolve()


def _parse(model_path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelRejected(model_path, f"malformed protobuf ({exc}); the file is not an ONNX "
                            "model or is truncated: export it again") from None
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise ModelRejected(model_path, "malformed protobuf: no graph or ir_version; the file is "
                            "not an ONNX model or is truncated: export it again")
    return proto


def _iter_tensors(graph) -> Iterator[Any]:
    """Every TensorProto that may carry data: initializers, Constant attributes, subgraphs."""
    import onnx

    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_tensors(sub)


def check_external_data(proto, model_path: Path, *,
                        max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES) -> list[str]:
    """Validate every external-data reference of `proto`; return the data files (relative).

    Raises:
        ModelRejected: a location is absolute, has `..`, goes through a symlink, resolves
            outside the model's folder or is missing; or an offset or length is out of range.
    """
    import onnx

    folder = model_path.parent.resolve()
    files: dict[str, int] = {}
    for tensor in _iter_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = _safe_location(model_path, folder, tensor.name, location)
        file_size = target.stat().st_size
        offset = _int_field(model_path, tensor.name, location, info, "offset", 0)
        length = _int_field(model_path, tensor.name, location, info, "length", file_size - offset)
        if offset > file_size or offset + length > file_size:
            raise ModelRejected(model_path, f"offset {offset} + length {length} is beyond the "
                                f"data file's {file_size} bytes; the data file is truncated or "
                                "belongs to another model", tensor=tensor.name, location=location)
        expected = _expected_nbytes(tensor)
        if expected is not None and expected != length:
            raise ModelRejected(model_path, f"length {length} does not match the {expected} bytes "
                                "that its dtype and dims need", tensor=tensor.name, location=location)
        files[location] = file_size
    if sum(files.values()) > max_external_bytes:
        raise ModelRejected(model_path, f"external data totals {sum(files.values())} bytes, over "
                            f"the cap of {max_external_bytes}; raise max_external_bytes")
    return sorted(files)


def _safe_location(model_path: Path, folder: Path, tensor: str, location: str) -> Path:
    def reject(reason: str) -> ModelRejected:
        return ModelRejected(model_path, reason, tensor=tensor, location=location)

    if not location or "\x00" in location:
        raise reject("external data has an empty or invalid location")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith(("\\", "/")):
        raise reject("external data location is an absolute path; it must be a file inside "
                     "the model's folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise reject("external data location contains '..' and leaves the model's folder")
    candidate = folder
    for part in windows.parts:  # splits on both separators
        candidate = candidate / part
        if candidate.is_symlink():
            raise reject("external data goes through a symlink; copy the data file into the "
                         "model's folder instead")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(folder):
        raise reject("external data resolves outside the model's folder")
    if not resolved.is_file():
        raise reject("external data file is missing; copy it beside the model")
    return resolved


def _int_field(model_path: Path, tensor: str, location: str, info: dict, key: str, default: int) -> int:
    if key not in info:
        return default
    try:
        value = int(info[key])
    except ValueError:
        value = -1
    if value < 0:
        raise ModelRejected(model_path, f"external data {key} {info[key]!r} is not a "
                            "non-negative integer", tensor=tensor, location=location)
    return value


def _expected_nbytes(tensor) -> int | None:
    import onnx

    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    count = int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1
    bits = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if tensor.data_type in bits:
        return (count + 1) // 2
    return count * itemsize


def _run_checker(model_path: Path) -> None:
    import onnx

    try:
        # The path form also checks models over 2 GiB; locations were validated above.
        onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRejected(model_path, f"fails onnx.checker.check_model(full_check=True): {first}; "
                            "re-export the model with a supported opset") from None


def _specs(values, exclude: set[str] = frozenset()) -> Iterator[TensorSpec]:
    import onnx

    for value in values:
        if value.name in exclude:
            continue
        ttype = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = onnx.TensorProto.DataType.Name(ttype.elem_type).lower()
        shape: list[int | str] = []
        for dim in ttype.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or UNKNOWN_DIM)
        yield TensorSpec(value.name, dtype, tuple(shape))


def _default_opset(proto) -> int:
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def _metadata(proto, sha256: str) -> dict[str, str]:
    meta = {p.key: p.value for p in proto.metadata_props}
    meta["opset"] = str(_default_opset(proto))
    meta["sha256"] = sha256
    if proto.producer_name and "producer" not in meta:
        meta["producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
    return meta


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
