"""Dataset: calibration and evaluation feeds for every backend, streamed with bounded memory.

Each backend adapts a Dataset to its SDK (ONNX Runtime's CalibrationDataReader, nncf.Dataset,
a TensorRT calibrator), so one object calibrates them all.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np

from .errors import InputError

Feeds = dict[str, np.ndarray]
LABELS_KEY = "labels"


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


class NpzArrays:
    """Arrays of an `.npz` file (no pickles), checked for consistent sample counts."""

    def __init__(self, path: str | os.PathLike, *, input_names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"data file {self.path} does not exist", field=str(self.path))
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                keys = list(npz.files)
                names = list(input_names) if input_names is not None else [k for k in keys if k != LABELS_KEY]
                missing = [n for n in names if n not in keys]
                if missing:
                    raise InputError(f"{self.path} has no array for input(s) {missing}; it holds "
                                     f"{keys}. Save one array per model input (np.savez)",
                                     field=missing[0])
                self.arrays = {n: npz[n] for n in names}
                self.labels = npz[LABELS_KEY] if LABELS_KEY in keys else None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{self.path} is not a readable .npz file ({exc}); write it with "
                             "numpy.savez without object arrays", field=str(self.path)) from None
        if not self.arrays:
            raise InputError(f"{self.path} holds no input arrays", field=str(self.path))
        lengths = {n: (a.shape[0] if a.ndim else 0) for n, a in self.arrays.items()}
        if len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise InputError(f"{self.path}: arrays must share a non-zero first (sample) axis, got "
                             f"{lengths}", field=str(self.path))
        self.count = next(iter(lengths.values()))
        if self.labels is not None and len(self.labels) != self.count:
            raise InputError(f"{self.path}: labels has {len(self.labels)} entries for "
                             f"{self.count} samples", field=LABELS_KEY)

    def batches(self, batch_size: int = 1) -> Iterator[Feeds]:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, self.count, batch_size):
            yield {n: np.ascontiguousarray(a[start:start + batch_size]) for n, a in self.arrays.items()}

    def all(self) -> Feeds:
        return dict(self.arrays)


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
