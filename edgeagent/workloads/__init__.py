"""Workloads: data plus a task (evaluation data, timing inputs, calibration, and training data).

A workload gives the bench three things for one model: batches of evaluation inputs with
their labels, batch-1 timing inputs in the shapes real traffic has (unpadded where lengths
vary), and metrics over the model's outputs, which its `task` defines. `NpzClassification`
wraps an `.npz` file (`--eval FILE.npz`); named workloads (`--workload NAME`) register in the
`edgeagent.workloads` entry-point group, as backends do: adding one is one file and one entry point.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..data import Dataset, NpzArrays
from ..errors import InputError
from ..ir import TensorSpec
from ..tasks import Task
from ..tasks.sequence_classification import SequenceClassificationTask

ENTRY_POINT_GROUP = "edgeagent.workloads"
Feeds = dict[str, np.ndarray]


@runtime_checkable
class Workload(Protocol):
    """Data plus a task: what the bench, `compare` and `--precision auto` rely on.

    `task` says what the model's tensors mean; `primary_metric` (normally the task's) names the
    metric budgets, the regression gate and recipe selection read.
    """

    name: str
    task: Task
    primary_metric: str | None

    def eval_batches(self, inputs: Sequence[TensorSpec]) -> Iterator[tuple[Feeds, np.ndarray | None]]:
        """Evaluation inputs and their labels (None where the workload has none)."""

    def timing_feeds(self, inputs: Sequence[TensorSpec], count: int) -> list[Feeds]:
        """Up to `count` batch-1 feeds in the shapes real requests have."""

    def calibration(self, inputs: Sequence[TensorSpec]) -> Dataset:
        """Representative inputs for INT8 calibration."""

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
        """Task metrics over all evaluation outputs (concatenated along the batch axis)."""

    def end_to_end(self, session: Any) -> tuple[Callable[[Any], Any], list[Any]] | None:
        """Where the task reads text: a callable doing tokenize → infer → decode, and its inputs."""


@runtime_checkable
class TrainableWorkload(Workload, Protocol):
    """A workload with training data: what `edgeagent finetune` and `edgeagent distill` need.

    Training examples are dicts of numpy arrays: `input_ids`, `attention_mask` and one label per
    head of the task (`Head.label`).
    """

    tokenizer_path: Path

    def training_examples(self, split: str, *, seed: int = 0) -> list[dict[str, np.ndarray]]:
        """Labelled examples of `split` (train, dev or test)."""


def batch_axis_dynamic(inputs: Sequence[TensorSpec]) -> bool:
    """Whether every input's first axis is symbolic, so samples can be stacked."""
    return bool(inputs) and all(s.shape and isinstance(s.shape[0], str) for s in inputs)


class NpzClassification:
    """An `.npz` with one array per input and an optional `labels` array, read as sequence classification.

    Metrics are the task's (top-1 accuracy and macro-F1 of the first output's argmax). Timing
    feeds are the file's samples one at a time: the shapes are the file's (fixed, as the file is
    rectangular).
    """

    def __init__(self, path: str | os.PathLike, *, eval_batch: int = 64) -> None:
        self.path = Path(path)
        self.name = f"npz:{self.path.name}"
        self.eval_batch = eval_batch
        self.task = SequenceClassificationTask()
        self.primary_metric = self.task.primary_metric
        self._arrays: NpzArrays | None = None

    def _load(self, inputs: Sequence[TensorSpec]) -> NpzArrays:
        if self._arrays is None:
            self._arrays = NpzArrays(self.path, input_names=[s.name for s in inputs])
        return self._arrays

    def eval_batches(self, inputs):
        arrays = self._load(inputs)
        size = self.eval_batch if batch_axis_dynamic(inputs) else 1
        yield from arrays.batches(size, with_labels=True)

    def timing_feeds(self, inputs, count):
        arrays = self._load(inputs)
        return [feeds for feeds, _ in zip(arrays.batches(1), range(count))]

    def calibration(self, inputs):
        return Dataset.from_npz(self.path, input_names=[s.name for s in inputs])

    def metrics(self, outputs, labels):
        return self.task.metrics(outputs, labels)

    def end_to_end(self, session):
        return None  # features, not text: nothing to read


@functools.cache
def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def list_workloads() -> list[str]:
    """Names usable with `--workload`."""
    return sorted(_registered())


def get_workload(name: str, **kwargs: Any) -> Workload:
    """The workload registered as `name`.

    Raises:
        InputError: an unknown name (the valid ones are listed) or a workload that fails to load.
    """
    entry = _registered().get(name)
    if entry is None:
        names = list_workloads()
        raise InputError(f"unknown workload {name!r}; registered workloads: "
                         f"{names or 'none'} (or pass --eval FILE.npz)", field="workload")
    try:
        factory = entry.load()
        return factory(**kwargs)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken plug-in names itself, not a traceback
        raise InputError(f"workload {name!r} failed to load ({entry.value}): "
                         f"{type(exc).__name__}: {exc}", field="workload") from exc


def workload_from_spec(spec: Mapping[str, Any]) -> Workload:
    """Rebuild a workload from its JSON description (how bench cells receive theirs)."""
    if spec.get("kind") == "npz":
        return NpzClassification(spec["path"], eval_batch=int(spec.get("eval_batch", 64)))
    if spec.get("kind") == "registered":
        return get_workload(spec["name"])
    raise InputError(f"unknown workload description {dict(spec)!r}")
