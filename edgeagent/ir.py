"""ModelIR: an ONNX file, its signature and metadata, loaded only after it is proven safe.

`load(path)` is the only way a model file enters edgeagent. Before onnx's checker or any
runtime touches the weights it checks what has historically been exploitable in ONNX files:
external-data locations that escape the model's folder (onnx and ONNX Runtime path-traversal
CVEs), symlinks and hardlinks, offsets and lengths past the end of the data file, oversized
files, graphs too large to compile, opsets no runtime knows and malformed protobuf. These checks
are edgeagent's own and run with `full_check=False` too: they do not rely on the installed onnx's
checker (onnx 1.17, the oldest allowed, checks none of the links).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any

import numpy as np

from . import safeio
from .errors import InputError, ModelRejected

DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3  # protobuf cannot hold more; bigger models use external data
DEFAULT_MAX_EXTERNAL_BYTES = 32 * 1024**3
# Nodes in the graph, its subgraphs and its functions together. A MiniLM encoder has about 1,000
# and large decoders tens of thousands; 200,000 Identity nodes parse in a second and then keep
# every runtime's graph optimizer busy for minutes.
DEFAULT_MAX_NODES = 100_000
MIN_OPSET = 7  # the oldest default-domain opset ONNX Runtime still runs
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
        """Rebuild from `to_json()`.

        Raises:
            InputError: not an object with a string `name`, a dtype numpy knows and a `shape`
                list of non-negative integers and strings.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a tensor spec must be an object with name, dtype and shape, got "
                             f"{type(data).__name__}", field="signature")
        name, dtype, shape = data.get("name"), data.get("dtype"), data.get("shape")
        if not isinstance(name, str) or not isinstance(dtype, str) or not isinstance(shape, list):
            raise InputError(f"tensor spec {data.get('name')!r} needs a string name and dtype and a shape list",
                             field="signature")
        try:
            np.dtype(dtype)
        except TypeError:
            raise InputError(f"tensor {name!r} has dtype {dtype!r}, which numpy does not know", field="signature") from None
        if len(shape) > 64 or not all(isinstance(d, str) or (type(d) is int and d >= 0) for d in shape):
            raise InputError(f"tensor {name!r} has shape {shape!r}; dims must be non-negative integers or "
                             "names (at most 64 of them)", field="signature")
        return cls(name, dtype, tuple(shape))


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
            value = safeio.loads_json(raw, what="metadata labels", max_depth=2)
        except InputError:  # hostile or broken metadata is no labels, not an error
            return None
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            return None
        return [str(v) for v in value]

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
         max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES, max_nodes: int = DEFAULT_MAX_NODES,
         full_check: bool = True) -> ModelIR:
    """Load an ONNX model after checking it is safe and valid.

    Args:
        path: an `.onnx` file, or a folder holding exactly one.
        max_bytes: cap on the `.onnx` file itself (default 2 GiB).
        max_external_bytes: cap on all external data together (default 32 GiB).
        max_nodes: cap on the nodes of the graph, its subgraphs and functions (default 100,000).
        full_check: run `onnx.checker.check_model(full_check=True)` (default True). Artifacts
            holding runtime-specific operators (ONNX Runtime contrib ops) load with False; every
            file-safety check and cap still runs.

    Returns:
        The ModelIR with its signature, metadata and sha256 (of the model and its data files).

    Raises:
        ModelRejected: missing file or not a regular file, too large, malformed protobuf, too many
            nodes, an opset outside what runtimes run, unsafe external data (escapes the folder,
            a symlink or hardlink, a backslash, an out-of-range offset or length) or a failed check.
    """
    model_path = _resolve_model_path(Path(path))
    data = safeio.read_bytes(model_path, max_bytes=max_bytes, what="model",
                             error=lambda reason: ModelRejected(
                                 model_path, f"{reason}; store large weights as external data or raise max_bytes"
                                 if "over the cap" in reason else reason))
    proto = _parse(model_path, data)
    check_limits(proto, model_path, max_nodes=max_nodes)
    external = check_external_data(proto, model_path, max_external_bytes=max_external_bytes)
    if full_check:
        _run_checker(model_path)
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(data).hexdigest().encode())  # the bytes parsed are the bytes hashed
    for name in external:
        digest.update(sha256_file(model_path.parent / name).encode())
    sha256 = digest.hexdigest()
    return ModelIR(
        path=model_path,
        inputs=tuple(_specs(proto.graph.input, model_path, exclude={i.name for i in proto.graph.initializer})),
        outputs=tuple(_specs(proto.graph.output, model_path)),
        metadata=MappingProxyType(_metadata(proto, sha256)),
        opset=_default_opset(proto),
        sha256=sha256,
        external_files=tuple(external),
    )


def _resolve_model_path(path: Path) -> Path:
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError):  # a NUL in the name, a name too long
        raise ModelRejected(path, "is not a usable path; check it") from None
    if not exists:
        raise ModelRejected(path, "no such file; check the path")
    if is_dir:
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) != 1:
            raise ModelRejected(path, f"folder holds {len(candidates)} .onnx files; pass the file itself")
        path = candidates[0]
    safeio.check_regular(path, what="model", error=lambda reason: ModelRejected(path, reason))
    return path.resolve()


def _parse(model_path: Path, data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelRejected(model_path, f"malformed protobuf ({exc}); the file is not an ONNX "
                            "model or is truncated: export it again") from None
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise ModelRejected(model_path, "malformed protobuf: no graph or ir_version; the file is "
                            "not an ONNX model or is truncated: export it again")
    _check_text(proto, model_path)
    return proto


def _check_text(proto, model_path: Path) -> None:
    """The string fields edgeagent reads are text: protobuf hands over a string field that is not
    UTF-8 as bytes, which would otherwise fail as a TypeError far from here."""
    texts = [proto.producer_name, proto.producer_version]
    texts += [t for p in proto.metadata_props for t in (p.key, p.value)]
    for value in [*proto.graph.input, *proto.graph.output]:
        texts.append(value.name)
        texts += [d.dim_param for d in value.type.tensor_type.shape.dim]
    texts += [i.name for i in proto.graph.initializer]
    if not all(isinstance(t, str) for t in texts):
        raise ModelRejected(model_path, "holds names or metadata that are not UTF-8 text; the file is corrupt: "
                            "export it again")


def _iter_graphs(proto) -> Iterator[Any]:
    """The main graph and every subgraph (If/Loop/Scan bodies), also inside functions, iteratively."""
    import onnx

    pending = [proto.graph]
    node_lists = [f.node for f in proto.functions]
    while pending or node_lists:
        if pending:
            graph = pending.pop()
            yield graph
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    pending.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    pending.extend(attr.graphs)


def _iter_node_lists(proto) -> Iterator[Any]:
    """The node list of every graph, subgraph and model-local function."""
    for graph in _iter_graphs(proto):
        yield graph.node
    for function in proto.functions:
        yield function.node


def _iter_tensors(proto) -> Iterator[Any]:
    """Every TensorProto that may carry data: initializers, Constant attributes, in the graph,
    its subgraphs and model-local function bodies (ONNX Runtime loads all of them)."""
    import onnx

    for graph in _iter_graphs(proto):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for nodes in _iter_node_lists(proto):
        for node in nodes:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices


def check_limits(proto, model_path: Path, *, max_nodes: int = DEFAULT_MAX_NODES) -> None:
    """Caps checked before anything compiles the graph: node count and the default-domain opset.

    Raises:
        ModelRejected: more than `max_nodes` nodes, or an opset outside [7, the newest the
            installed onnx knows], or default-domain nodes with no opset declared.
    """
    import onnx

    nodes = sum(len(n) for n in _iter_node_lists(proto))
    if nodes > max_nodes:
        raise ModelRejected(model_path, f"has {nodes} nodes, over the cap of {max_nodes}; a graph that "
                            "large takes runtimes minutes to optimise: raise max_nodes if it is meant to be")
    newest = onnx.defs.onnx_opset_version()
    declared = [op for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    for op in declared:
        if not MIN_OPSET <= op.version <= newest:
            raise ModelRejected(model_path, f"declares opset {op.version}; runtimes here run opsets "
                                f"{MIN_OPSET} to {newest}: export it again with a supported opset")
    if not declared and any(n.domain in ("", "ai.onnx") for nodes_ in _iter_node_lists(proto) for n in nodes_):
        raise ModelRejected(model_path, "uses standard operators but declares no default-domain opset; "
                            "export it again")


def check_external_data(proto, model_path: Path, *,
                        max_external_bytes: int = DEFAULT_MAX_EXTERNAL_BYTES) -> list[str]:
    """Validate every external-data reference of `proto`; return the data files (relative).

    Raises:
        ModelRejected: a location is absolute, has `..` or a backslash, goes through a symlink, is a
            hardlink or not a regular file, resolves outside the model's folder or is missing; or an
            offset or length is out of range.
    """
    import onnx

    folder = model_path.parent.resolve()
    files: dict[str, int] = {}
    for tensor in _iter_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        if not all(isinstance(t, str) for pair in info.items() for t in pair) or not isinstance(tensor.name, str):
            raise ModelRejected(model_path, "an external-data entry is not UTF-8 text; the file is corrupt")
        location = info.get("location", "")
        target, file_size = _safe_location(model_path, folder, tensor.name, location)
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
        files[PurePosixPath(location).as_posix()] = file_size  # "./w.bin" is the file "w.bin"
    if sum(files.values()) > max_external_bytes:
        raise ModelRejected(model_path, f"external data totals {sum(files.values())} bytes, over "
                            f"the cap of {max_external_bytes}; raise max_external_bytes")
    return sorted(files)


def _safe_location(model_path: Path, folder: Path, tensor: str, location: str) -> tuple[Path, int]:
    """The file a runtime opens for `location` (folder / location, taken literally) and its size.

    ONNX Runtime and onnx join the location to the model's folder as it is written, so the path
    checked and hashed here is exactly that one: no normalisation that the runtime would not do.
    """
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
    if "\\" in location:
        # POSIX runtimes open a file literally named "sub\\w.bin", Windows ones "sub/w.bin": one
        # location, two files. Refused, so that the file checked is the file loaded everywhere.
        raise reject("external data location holds a backslash, which names different files on POSIX "
                     "and Windows; save the model again with '/' as the separator")
    candidate = folder
    for part in posix.parts:
        candidate = candidate / part
        if candidate.is_symlink():
            raise reject("external data goes through a symlink; copy the data file into the "
                         "model's folder instead")
    if not candidate.resolve().is_relative_to(folder):
        raise reject("external data resolves outside the model's folder")
    if not candidate.exists():
        raise reject("external data file is missing; copy it beside the model")
    st = safeio.check_regular(candidate, what="external data", follow_symlinks=False, single_link=True,
                              error=lambda reason: reject(f"external data file {reason}"))
    return candidate, st.st_size


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
    if any(d < 0 for d in tensor.dims):
        return -1  # matches no length: negative dims are refused with the length's message
    count = math.prod(tensor.dims)  # Python ints: hostile dims must not wrap around
    bits = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if tensor.data_type in bits:
        return (count + 1) // 2
    return count * itemsize


def _run_checker(model_path: Path) -> None:
    import onnx

    try:
        # The path form also checks models over 2 GiB; locations were validated above.
        onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError,
            TypeError) as exc:  # on hostile files the checker's bindings raise plain errors too
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRejected(model_path, f"fails onnx.checker.check_model(full_check=True): {first}; "
                            "re-export the model with a supported opset") from None


def _specs(values, model_path: Path, exclude: set[str] = frozenset()) -> Iterator[TensorSpec]:
    import onnx

    for value in values:
        if value.name in exclude:
            continue
        ttype = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        except (KeyError, TypeError, ValueError):
            if ttype.elem_type not in onnx.TensorProto.DataType.values():
                raise ModelRejected(model_path, f"has element type {ttype.elem_type}, which ONNX does not "
                                    "define; export it again", tensor=value.name) from None
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
