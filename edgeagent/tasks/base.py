"""The Task contract: what a model's tensors mean, shared by the bench, the agent, serve and training.

A task owns how text becomes feeds, how outputs become an answer (a `ToolCall`), the metrics and
which one budgets and gates use (`primary_metric`), the heads a trainer attaches and the losses
it computes on them, the export spec (example inputs, dynamic axes, output names) and whether
its answers are the same alone and in a padded batch. Workloads pair a task with data; nothing
outside `workloads/` knows a workload's internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ArtifactError, InputError
from ..ir import TensorSpec

NOT_UNDERSTOOD = "not_understood"
MAX_LABELS = 1_000_000
# metadata_props key under which an exported model carries the task (labels included) it was
# trained for, so an agent folder whose agent.json lists other labels (reversed, another model's)
# is refused instead of answering confidently wrong.
TASK_METADATA_KEY = "edgeagent.task"
TUNED_FIELDS = ("threshold", "temperature")  # what calibration may change after export


def same_labels(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two task descriptions (`to_json()`) agree on everything but what calibration tunes
    after export (the rejection threshold and the softmax temperature)."""
    def view(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in TUNED_FIELDS}

    return view(a) == view(b)


IGNORE = -100  # label of special and padding tokens, as torch's cross-entropy expects


@dataclass
class ToolCall:
    """What a model understood: a tool (intent) with its arguments (slots), or `not_understood`.

    Every task's reader answers with one, so the agent, serve and the CLI handle them alike.
    """

    intent: str
    slots: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    latency_ms: float = 0.0
    text: str = ""
    truncated: bool = False
    # Slots taken from the caller's context (the satellite's area) rather than from the text.
    context: dict[str, Any] = field(default_factory=dict)
    # Slot → how the home resolved it: {"raw", "id", "name", "score"} or {"raw", "unmatched": True}.
    resolved: dict[str, Any] = field(default_factory=dict)
    # Why an answer is not_understood when a model could not finish one (a token budget ran out).
    reason: str | None = None
    # Which model answered, where an agent has several (a cascade's "router" or "generator").
    answered_by: str | None = None

    @property
    def understood(self) -> bool:
        return self.intent != NOT_UNDERSTOOD

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "intent": self.intent, "slots": self.slots, "confidence": self.confidence,
                "latency_ms": self.latency_ms, "truncated": self.truncated, "context": self.context,
                "resolved": self.resolved,
                **({"reason": self.reason} if self.reason is not None else {}),
                **({"answered_by": self.answered_by} if self.answered_by is not None else {})}


def fill_context(call: ToolCall, context: Mapping[str, str], intent_slots: Mapping[str, Sequence[str]]) -> ToolCall:
    """Fill the area (or floor) an utterance leaves out, or says as "here", from the caller's context,
    as Home Assistant does with a satellite's area; only for intents that take one."""
    if not call.understood or not context:
        return call
    takes = intent_slots.get(call.intent, ())
    here = str(call.slots.get("area", "")).strip().lower() in ("here", "in here", "this room")
    if here:
        del call.slots["area"]
    named = ("area" in call.slots) or ("floor" in call.slots)
    for key in ("area", "floor"):
        if key in context and key in takes and not named:
            call.slots[key] = context[key]
            call.context[key] = context[key]
            named = True
    return call


@dataclass(frozen=True)
class Head:
    """One trained output of a model.

    Attributes:
        output: the model's output name (e.g. "intent_logits").
        label: the key of its label in a training example (e.g. "intent").
        classes: the head's width.
        per_token: token-level (one label per token, padding ignored) or one per sequence.
    """

    output: str
    label: str
    classes: int
    per_token: bool = False


@dataclass(frozen=True)
class ExportSpec:
    """How a task's models are exported: names, dynamic axes and an example's shape.

    Attributes:
        input_names, output_names: the ONNX graph's names, in the model's argument order.
        dynamic_axes: {name: {axis: symbolic name}}.
        example_ids: (batch, sequence) of the example token ids the exporter traces with.
        example_token: the id the example is filled with (a real, ordinary vocabulary entry).
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    example_ids: tuple[int, int] = (1, 12)
    example_token: int = 1012

    def example_inputs(self, torch) -> tuple:
        """Token ids filled with `example_token` and an all-ones mask, one tensor per input."""
        ids = torch.full(self.example_ids, self.example_token, dtype=torch.int64)
        return tuple(ids if name == "input_ids" else torch.ones_like(ids) for name in self.input_names)


@runtime_checkable
class Reader(Protocol):
    """Text → ToolCall on any backend's Session (tokenize, run, decode)."""

    def act(self, session: Any, text: str) -> ToolCall:
        """One utterance; never raises for bad text (empty text is not understood)."""

    def act_batch(self, session: Any, texts: Sequence[str]) -> list[ToolCall]:
        """Many utterances in one padded model call, with the same answers as one by one."""


@runtime_checkable
class Task(Protocol):
    """The contract every task implements (see `edgeagent.tasks.intent_slots` for a full one)."""

    name: str
    primary_metric: str
    # Whether a padded batch answers each item as it would alone, given a batch-invariant
    # backend recipe (the artifact's manifest says that part).
    batch_invariant: bool

    @property
    def heads(self) -> tuple[Head, ...]:
        """The outputs a trainer attaches and computes losses on, in output order."""

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None,
                **context: Any) -> dict[str, float]:
        """Metrics over all evaluation outputs (concatenated along the batch axis)."""

    def training_metric(self, predictions: Sequence[Mapping[str, np.ndarray]],
                        examples: Sequence[Mapping[str, Any]]) -> float:
        """One number, higher is better, for early stopping on per-example predictions."""

    def export_spec(self) -> ExportSpec:
        """Names, dynamic axes and example inputs for exporting this task's models."""

    def reader(self, tokenizer: Any, **options: Any) -> Reader:
        """A Reader that answers utterances with this task's models."""

    def check_outputs(self, outputs: Sequence[TensorSpec], where: str) -> None:
        """Raise ArtifactError when a model's outputs do not fit this task's label space."""

    def to_json(self) -> dict[str, Any]:
        """What an agent folder records to rebuild this task (`task_from_json`)."""


CONTEXT_KEYS = ("area", "floor")


def check_context(context: Any) -> dict[str, str]:
    """A caller's context as Home Assistant passes it: {"area": ..., "floor": ...}, strings only.

    Raises:
        InputError: not a mapping, an unknown key or a value that is not a non-empty string.
    """
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise InputError(f"context must be an object such as {{\"area\": \"kitchen\"}}, got "
                         f"{type(context).__name__}", field="context")
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise InputError(f"context has unknown key(s) {unknown}; it takes {list(CONTEXT_KEYS)}", field="context")
    for key, value in context.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise InputError(f"context {key!r} must be a non-empty name of at most 200 characters, got {value!r}",
                             field=f"context.{key}")
    return {k: v.strip() for k, v in context.items()}


def heads_by_output(task: Task) -> dict[str, Head]:
    return {head.output: head for head in task.heads}


def check_head_widths(task: Task, outputs: Sequence[TensorSpec], where: str) -> None:
    """Every head's output is present and, where its width is fixed, as wide as its label set.

    Raises:
        ArtifactError: a missing output or a width that disagrees, naming both numbers. A label
            list that does not match its model gives confident wrong answers, so it is refused.
    """
    found = {spec.name: spec for spec in outputs}
    for head in task.heads:
        spec = found.get(head.output)
        if spec is None:
            raise ArtifactError(f"{where}: the model has no output {head.output!r} that task {task.name!r} "
                                f"reads; its outputs are {sorted(found)}")
        width = spec.shape[-1] if spec.shape else None
        if isinstance(width, int) and width != head.classes:
            raise ArtifactError(f"{where}: output {head.output!r} has {width} classes but the task's "
                                f"{head.label!r} labels list {head.classes}; the labels belong to another "
                                "model: rebuild the folder")


def softmax_confidence(logits: np.ndarray) -> tuple[int, float]:
    """The winner and its softmax probability, without normalising the rest: 1 / sum(exp(x - max))."""
    best = int(logits.argmax())
    return best, 1.0 / float(np.exp(logits.astype(np.float64) - float(logits[best])).sum())


def require_fraction(value: Any, what: str) -> float:
    """A number in [0, 1] (a threshold), from JSON or Python.

    Raises:
        InputError: anything else (a string, NaN, a number outside the range).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{what} must be a number in [0, 1], got {value!r:.40}", field=what)
    return float(value)


def require_labels(values: Any, what: str) -> list[str]:
    """A non-empty list of distinct strings (class or tag names).

    Raises:
        InputError: anything else, naming `what`.
    """
    if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values) \
            or len(values) > MAX_LABELS:
        raise InputError(f"{what} must be a non-empty list of at most {MAX_LABELS} strings, got "
                         f"{type(values).__name__}", field=what)
    if len(set(values)) != len(values):
        raise InputError(f"{what} holds duplicate names", field=what)
    return list(values)
