"""Dataset: calibration and evaluation feeds for every backend, streamed with bounded memory.

Each backend adapts a Dataset to its SDK (ONNX Runtime's CalibrationDataReader, nncf.Dataset,
a TensorRT calibrator), so one object calibrates them all.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import safeio
from .errors import InputError

Feeds = dict[str, np.ndarray]
LABELS_KEY = "labels"
# An .npz is streamed, so its size is not bounded by memory; these caps bound what is trusted.
MAX_NPZ_BYTES = 64 << 30  # data all members declare together
MAX_NPZ_MEMBERS = 1024
MAX_NPY_HEADER_BYTES = 10_000  # numpy's own default
MAX_IN_MEMORY_BYTES = 1 << 30  # what is read whole: labels, Fortran-ordered arrays, `all()`


class Dataset:
    """A re-iterable stream of feed dicts `{input_name: np.ndarray}`.

    Args:
        source: any iterable of feed dicts. A list, or an object whose `__iter__` starts over
            (a generator function wrapped with `Dataset.from_factory`), can be read more than
            once; a one-shot iterator can be read once and says so if read again.
        transform: applied to each item as it is read (default None), e.g. a tokenizer that
            turns a sentence into feeds.
    """

    def __init__(self, source: Iterable, transform: Callable[[object], Mapping] | None = None) -> None:
        if isinstance(source, (str, bytes, Mapping)) or not isinstance(source, Iterable):
            raise InputError(f"Dataset source must be an iterable of feed dicts, got "
                             f"{type(source).__name__}; wrap a single dict in a list")
        self._source = source
        self._transform = transform
        self._one_shot = iter(source) is source  # an iterator returns itself
        self._consumed = False

    @classmethod
    def from_factory(cls, factory: Callable[[], Iterable], transform=None) -> Dataset:
        """A Dataset that calls `factory()` afresh on every pass (e.g. a generator function)."""
        return cls(_Restartable(factory), transform)

    @classmethod
    def from_npz(cls, path: str | os.PathLike, *, input_names: Sequence[str] | None = None,
                 batch_size: int = 1) -> Dataset:
        """Stream samples (slices along axis 0) from an `.npz` file of one array per input.

        A `labels` array, if present, is not part of the feeds (see `load_labels`).

        Args:
            path: the `.npz` file; pickled objects are refused.
            input_names: the model's inputs; every one must be in the file (default: all arrays).
            batch_size: samples per feed dict (default 1).

        Raises:
            InputError: missing or unreadable file, missing input, arrays of unequal length.
        """
        arrays = NpzArrays(path, input_names=input_names)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        batches = -(-arrays.count // batch_size)
        return cls(_Restartable(lambda: arrays.batches(batch_size), length=batches))

    def __iter__(self) -> Iterator[Feeds]:
        if self._one_shot:
            if self._consumed:
                raise InputError("this Dataset wraps a one-shot iterator that was already read; "
                                 "pass a list or use Dataset.from_factory(generator_function)")
            self._consumed = True
        for item in self._source:
            feeds = self._transform(item) if self._transform is not None else item
            if not isinstance(feeds, Mapping):
                raise InputError(f"Dataset item is {type(feeds).__name__}, expected a dict "
                                 "{input_name: np.ndarray}; give a transform that builds one")
            yield {str(k): np.asarray(v) for k, v in feeds.items()}

    def __len__(self) -> int:
        if isinstance(self._source, Sequence):
            return len(self._source)
        if isinstance(self._source, _Restartable) and self._source.length is not None:
            return self._source.length
        raise TypeError("this Dataset streams from a source of unknown length")

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """A random subset of `n` items, the same for the same seed, in source order.

        Uses reservoir sampling, so memory holds at most `n` items whatever the source's size.
        """
        if n <= 0:
            raise InputError(f"subset size must be positive, got {n}")
        parent = self

        def sample() -> list[Feeds]:
            rng = np.random.default_rng(seed)
            reservoir: list[tuple[int, Feeds]] = []
            for i, item in enumerate(parent):
                if i < n:
                    reservoir.append((i, item))
                else:
                    j = int(rng.integers(0, i + 1))
                    if j < n:
                        reservoir[j] = (i, item)
            return [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]

        return Dataset.from_factory(sample)


class _Restartable:
    def __init__(self, factory: Callable[[], Iterable], length: int | None = None) -> None:
        self.factory = factory
        self.length = length

    def __iter__(self) -> Iterator:
        return iter(self.factory())


@dataclass(frozen=True)
class _Member:
    """One `.npy` member of an `.npz`, as its header describes it (checked against the zip entry)."""

    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    header_bytes: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


class NpzArrays:
    """The arrays of an `.npz` file, streamed: memory holds one batch, never the file.

    Every member's `.npy` header is read and checked before any data: it must be an array (no
    other member kinds), hold no Python objects (those need pickle), and declare exactly as many
    bytes as the zip entry holds, so neither a header claiming terabytes nor a zip bomb gets a
    buffer; all arrays must share their first (sample) axis.

    Args:
        path: the `.npz` file (np.savez or np.savez_compressed).
        input_names: the arrays to read as feeds (default: all but `labels`).
        max_bytes: cap on the data all members declare together (default 64 GiB).

    Raises:
        InputError: missing or not a regular file, not a zip, a member that is not an array or
            holds objects, a header that disagrees with its member, missing inputs, unequal lengths.
    """

    def __init__(self, path: str | os.PathLike, *, input_names: Sequence[str] | None = None,
                 max_bytes: int = MAX_NPZ_BYTES) -> None:
        self.path = Path(path)
        members = self._read_headers(max_bytes)
        keys = list(members)
        names = list(input_names) if input_names is not None else [k for k in keys if k != LABELS_KEY]
        missing = [n for n in names if n not in members]
        if missing:
            raise InputError(f"{self.path} has no array for input(s) {missing}; it holds "
                             f"{keys}. Save one array per model input (np.savez)", field=missing[0])
        if not names:
            raise InputError(f"{self.path} holds no input arrays", field=str(self.path))
        self._members = {n: members[n] for n in names}
        lengths = {n: (m.shape[0] if m.shape else 0) for n, m in self._members.items()}
        if len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise InputError(f"{self.path}: arrays must share a non-zero first (sample) axis, got "
                             f"{lengths}", field=str(self.path))
        self.count = next(iter(lengths.values()))
        self.labels = None
        if LABELS_KEY in members:
            label_member = members[LABELS_KEY]
            if not label_member.shape or label_member.shape[0] != self.count:
                raise InputError(f"{self.path}: labels has {label_member.shape[0] if label_member.shape else 0} "
                                 f"entries for {self.count} samples", field=LABELS_KEY)
            self.labels = self._whole(LABELS_KEY, label_member)

    @property
    def names(self) -> list[str]:
        return list(self._members)

    def _fail(self, reason: str) -> InputError:
        return InputError(f"{self.path} {reason}", field=str(self.path))

    def _open_zip(self):
        handle = safeio.open_regular(self.path, what="data file", error=self._fail)
        try:
            return handle, zipfile.ZipFile(handle)
        except BaseException:
            handle.close()
            raise

    def _read_headers(self, max_bytes: int) -> dict[str, _Member]:
        members: dict[str, _Member] = {}
        total = 0
        try:
            handle, archive = self._open_zip()
            with handle, archive:
                infos = archive.infolist()
                if len(infos) > MAX_NPZ_MEMBERS:
                    raise self._fail(f"has {len(infos)} members, over the cap of {MAX_NPZ_MEMBERS}")
                for info in infos:
                    member = self._header(archive, info)
                    total += member.nbytes
                    if total > max_bytes:
                        raise self._fail(f"declares {total} bytes of arrays, over the cap of {max_bytes}")
                    members[info.filename[:-len(".npy")]] = member
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
                RuntimeError) as exc:
            raise self._fail(f"is not a readable .npz file ({exc}); write it with numpy.savez without "
                             "object arrays") from None
        return members

    def _header(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
        name = info.filename
        if info.is_dir() or not name.endswith(".npy"):
            raise self._fail(f"holds {name!r}, which is not an array (.npy member); write the file with "
                             "numpy.savez")
        if info.flag_bits & 0x1:
            raise self._fail(f"member {name!r} is encrypted; write the file with numpy.savez")
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        with archive.open(info) as stream:
            try:
                version = np.lib.format.read_magic(stream)
                if version not in readers:
                    raise self._fail(f"member {name!r} is .npy format {version}; write it with numpy.savez")
                shape, fortran, dtype = readers[version](stream, max_header_size=MAX_NPY_HEADER_BYTES)
            except InputError:
                raise
            except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError...
                raise self._fail(f"is not a readable .npz file: member {name!r} has a broken .npy header "
                                 f"({type(exc).__name__}: {exc})") from None
            header_bytes = stream.tell()
        if dtype.hasobject:
            raise self._fail(f"member {name!r} holds Python objects, which only pickle can read; refused. "
                             "Save numeric arrays")
        if any(d < 0 for d in shape):
            raise self._fail(f"member {name!r} has a negative dimension in {shape}")
        member = _Member(info, dtype, tuple(shape), bool(fortran), header_bytes)
        if header_bytes + member.nbytes != info.file_size:
            raise self._fail(f"member {name!r} declares {member.nbytes} bytes of data ({dtype} {tuple(shape)}) "
                             f"but holds {info.file_size - header_bytes}; the file is truncated or forged")
        return member

    def _whole(self, name: str, member: _Member) -> np.ndarray:
        """One member read entirely (labels, Fortran-ordered arrays), bounded by MAX_IN_MEMORY_BYTES."""
        if member.nbytes > MAX_IN_MEMORY_BYTES:
            raise self._fail(f"array {name!r} is {member.nbytes} bytes, too large to read at once (cap "
                             f"{MAX_IN_MEMORY_BYTES}); save it C-ordered (np.ascontiguousarray) to stream it")
        try:
            handle, archive = self._open_zip()
            with handle, archive, archive.open(member.info) as stream:
                stream.seek(member.header_bytes)
                data = _read_exact(stream, member.nbytes, lambda: self._fail(f"member {name!r} is truncated"))
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
            raise self._fail(f"cannot be read ({exc})") from None
        order = "F" if member.fortran else "C"
        return _native(np.frombuffer(data, member.dtype).reshape(member.shape, order=order))

    def batches(self, batch_size: int = 1, *, with_labels: bool = False) -> Iterator[Any]:
        """Feed dicts of `batch_size` samples (the last may be shorter), read as they are yielded;
        with `with_labels`, (feeds, labels or None) pairs.

        Raises:
            InputError: batch_size below 1, or a member that turns out truncated or corrupt.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        whole = {n: self._whole(n, m) for n, m in self._members.items() if m.fortran and len(m.shape) > 1}
        try:
            handle, archive = self._open_zip()
            with handle, archive, contextlib.ExitStack() as stack:
                streams = {}
                for name, member in self._members.items():
                    if name not in whole:
                        streams[name] = stack.enter_context(archive.open(member.info))
                        streams[name].seek(member.header_bytes)
                for start in range(0, self.count, batch_size):
                    rows = min(batch_size, self.count - start)
                    feeds = {}
                    for name, member in self._members.items():
                        if name in whole:
                            feeds[name] = np.ascontiguousarray(whole[name][start:start + rows])
                            continue
                        data = _read_exact(streams[name], rows * member.row_bytes,
                                           lambda name=name: self._fail(f"member {name!r} is truncated"))
                        feeds[name] = _native(np.frombuffer(data, member.dtype).reshape((rows, *member.shape[1:])))
                    if with_labels:
                        labels = None if self.labels is None else self.labels[start:start + rows]
                        yield feeds, labels
                    else:
                        yield feeds
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
            raise self._fail(f"cannot be read ({exc}); the file is corrupt") from None

    def all(self) -> Feeds:
        """Every sample in one feed dict (bounded: at most MAX_IN_MEMORY_BYTES together).

        Raises:
            InputError: the arrays together are larger than that; stream them with `batches`.
        """
        total = sum(m.nbytes for m in self._members.values())
        if total > MAX_IN_MEMORY_BYTES:
            raise self._fail(f"holds {total} bytes of inputs, too many to read at once (cap "
                             f"{MAX_IN_MEMORY_BYTES}); split the file")
        return next(self.batches(self.count))


def _read_exact(stream, size: int, truncated: Callable[[], InputError]) -> bytearray:
    buffer = bytearray(size)
    view, filled = memoryview(buffer), 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            raise truncated()
        filled += count
    return buffer


def _native(array: np.ndarray) -> np.ndarray:
    """The array in the machine's byte order, which sessions expect (a `>f4` is not float32 here)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def finite_samples(dataset: Dataset, *, what: str = "calibration") -> Dataset:
    """`dataset`, checked as it is read: a float input holding NaN or Inf is refused (quantizers turn
    such samples into infinite or NaN scales and an artifact that answers -inf).

    Raises (when iterated):
        CalibrationError: naming the sample, the input and the first bad index.
    """
    from .errors import CalibrationError

    def checked() -> Iterator[Feeds]:
        for number, feeds in enumerate(dataset):
            for name, value in feeds.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
                    raise CalibrationError(f"{what} sample {number} holds NaN or Inf in input {name!r} (first "
                                           f"at index {bad}); give finite, representative samples")
            yield feeds

    try:
        length = len(dataset)
    except TypeError:  # a stream of unknown length stays one (nncf asks for a length when there is one)
        length = None
    return Dataset(_Restartable(checked, length=length))


def as_dataset(calibration: Dataset | Iterable | str | os.PathLike | None,
               input_names: Sequence[str] | None = None) -> Dataset | None:
    """Accept a Dataset, an iterable of feed dicts or an `.npz` path; None stays None."""
    if calibration is None or isinstance(calibration, Dataset):
        return calibration
    if isinstance(calibration, (str, os.PathLike)):
        return Dataset.from_npz(calibration, input_names=input_names)
    return Dataset(calibration)


def synthetic_feeds(inputs: Sequence[Any], *, dims: Mapping[str, int] | None = None, batch: int = 1,
                    seed: int = 0) -> Feeds:
    """Inputs for timing a model that came without data.

    Symbolic dims take `dims[name]`, the first axis takes `batch`, any other symbolic dim 16.
    Floats are standard normal; integers are 1 and booleans True, which stay valid as token
    ids, attention masks and segment ids alike (random ids could exceed a vocabulary).

    Raises:
        InputError: a dim override that is not a positive integer.
    """
    dims = dict(dims or {})
    for name, value in dims.items():
        if not isinstance(value, int) or value < 1:
            raise InputError(f"dim {name!r} must be a positive integer, got {value!r}", field=name)
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for spec in inputs:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in dims:
                shape.append(dims[dim])
            else:
                shape.append(batch if axis == 0 else 16)
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = np.ones(shape, dtype=bool)
        else:
            feeds[spec.name] = np.ones(shape, dtype=dtype)
    return feeds
