"""Task `sequence-classification`: one label per input, the argmax of one output.

Metrics are top-1 accuracy and macro-F1 of that output against integer labels. Models over
features (an `.npz` of arrays) are measured only; models over text (`input_ids` and optionally
`attention_mask` / `token_type_ids`) are also read: text → the class's name as a ToolCall whose
confidence is the winner's softmax probability.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..ir import TensorSpec
from .base import (NOT_UNDERSTOOD, ExportSpec, Head, ToolCall, check_head_widths, require_fraction,
                   require_labels, softmax_confidence)
from .text import TextGate, clean_text, highest_id

NAME = "sequence-classification"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy and macro-F1 (classes absent from both labels and predictions skipped)."""
    predicted = np.asarray(logits).reshape(len(labels), -1).argmax(-1)
    labels = np.asarray(labels).reshape(-1)
    f1s = []
    for cls in np.union1d(labels, predicted):
        tp = np.sum((predicted == cls) & (labels == cls))
        fp = np.sum((predicted == cls) & (labels != cls))
        fn = np.sum((predicted != cls) & (labels == cls))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(predicted == labels)), "macro_f1": float(np.mean(f1s))}


class SequenceClassificationTask:
    """Classify a whole input.

    Args:
        labels: class names in the order of the output's last axis (default None: the model's
            classes are unnamed; reading then answers with the class index as text).
        output: the output that holds the logits (default None: the model's first output).
        threshold: confidence below which the reader answers `not_understood` (default 0.0).
        max_length: longest token sequence a text reader feeds (default 128).
        language: the ISO 639-1 code of the model's language, for reading text (default None: text in
            any script is read).

    Raises:
        InputError: empty or duplicate labels, a threshold outside [0, 1], a bad length or language.
    """

    name = NAME
    primary_metric = "accuracy"
    batch_invariant = True

    def __init__(self, labels: Sequence[str] | None = None, *, output: str | None = None,
                 threshold: float = 0.0, max_length: int = 128, language: str | None = None) -> None:
        self.labels = require_labels(labels, "labels") if labels is not None else None
        threshold = require_fraction(threshold, "threshold")
        if type(max_length) is not int or not 2 <= max_length <= 8192:
            raise InputError(f"max_length must be an integer from 2 to 8192, got {max_length!r:.40}",
                             field="max_length")
        for name, value in (("output", output), ("language", language)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{name} must be a string, got {value!r:.40}", field=name)
        self.output, self.threshold, self.max_length, self.language = output, threshold, max_length, language

    @property
    def heads(self) -> tuple[Head, ...]:
        if self.labels is None:
            return ()
        return (Head(self.output or "logits", "label", len(self.labels)),)

    def logits(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        if not outputs:
            return None
        value = outputs.get(self.output) if self.output else next(iter(outputs.values()))
        if value is None or not np.issubdtype(value.dtype, np.floating) or value.size == 0:
            return None
        return value

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None, **_: Any) -> dict[str, float]:
        logits = self.logits(outputs)
        if labels is None or logits is None:
            return {}
        return classification_metrics(logits, labels)

    def training_metric(self, predictions, examples) -> float:
        logits = np.stack([p[self.output or "logits"] for p in predictions])
        return classification_metrics(logits, np.asarray([e["label"] for e in examples]))["accuracy"]

    def export_spec(self) -> ExportSpec:
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                self.output or "logits": {0: "batch"}}
        return ExportSpec(("input_ids", "attention_mask"), (self.output or "logits",), axes)

    def check_outputs(self, outputs: Sequence[TensorSpec], where: str) -> None:
        if self.labels is not None:
            check_head_widths(self, outputs, where)

    def reader(self, tokenizer, *, threshold: float | None = None, **_: Any) -> TextClassificationReader:
        return TextClassificationReader(self, tokenizer, threshold=self.threshold if threshold is None else threshold)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels, "output": self.output, "threshold": self.threshold,
                "max_length": self.max_length, "language": self.language}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SequenceClassificationTask:
        return cls(data.get("labels"), output=data.get("output"), threshold=data.get("threshold", 0.0),
                   max_length=data.get("max_length", 128), language=data.get("language"))


class TextClassificationReader:
    """Text → tokens → the task's logits → the class name, on any backend's Session."""

    def __init__(self, task: SequenceClassificationTask, tokenizer, *, threshold: float) -> None:
        self.task, self.tokenizer, self.threshold = task, tokenizer, float(threshold)
        self.gate = TextGate(tokenizer, task.language)
        tokenizer.no_truncation()
        tokenizer.no_padding()

    def _encode(self, text: str) -> tuple[list[int], bool, bool]:
        """(ids, truncated, mostly unknown)."""
        encoding = self.tokenizer.encode(text)
        ids = encoding.ids
        unknown = self.gate.mostly_unknown(encoding)
        if len(ids) > self.task.max_length:
            return ids[:self.task.max_length - 1] + ids[-1:], True, unknown
        return ids, False, unknown

    def check(self, session) -> None:
        """Raise ArtifactError now when the tokenizer's highest id is outside the model's embedding or
        the logits are not as wide as the labels (see IntentSlotReader.check)."""
        top = highest_id(self.tokenizer)
        try:
            logits = self.task.logits(session.run(self._feeds(session, [[top]])))
        except InputError:
            raise
        except Exception as exc:  # a runtime's own error for an index past the embedding
            raise ArtifactError(f"the model fails on token id {top}, the tokenizer's highest, so the tokenizer "
                                f"belongs to another model ({type(exc).__name__}: {exc})") from None
        if logits is None:
            raise ArtifactError("the model has no float output to read classes from")
        if self.task.labels is not None and logits.shape[-1] != len(self.task.labels):
            raise ArtifactError(f"the model's logits have {logits.shape[-1]} classes but the task lists "
                                f"{len(self.task.labels)} labels; the labels belong to another model")

    def _feeds(self, session, rows: list[list[int]]) -> dict[str, np.ndarray]:
        names = {s.name for s in session.inputs}
        unknown = sorted(names - set(TEXT_INPUTS))
        if unknown:
            raise InputError(f"a text classifier is fed {list(TEXT_INPUTS)}; this model also wants {unknown}",
                             field=unknown[0])
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: feeds[name] for name in names}

    def _call(self, logits: np.ndarray, text: str, truncated: bool) -> ToolCall:
        best, confidence = softmax_confidence(logits)
        if confidence < self.threshold:
            return ToolCall(NOT_UNDERSTOOD, confidence=confidence, text=text, truncated=truncated)
        label = self.task.labels[best] if self.task.labels else str(best)
        return ToolCall(label, {}, confidence, text=text, truncated=truncated)

    def act(self, session, text: str) -> ToolCall:
        return self.act_batch(session, [text])[0]

    def act_batch(self, session, texts: Sequence[str]) -> list[ToolCall]:
        start = time.perf_counter()
        calls: list[ToolCall | None] = [None] * len(texts)
        live, encoded = [], []
        for i, raw in enumerate(texts):
            text = self.gate.clean(raw)
            if text is not None:
                ids, truncated, unknown = self._encode(text)
                if not unknown:
                    live.append((i, text))
                    encoded.append((ids, truncated))
                    continue
            calls[i] = ToolCall(NOT_UNDERSTOOD, text=clean_text(raw) if isinstance(raw, str) else "")
        if live:
            logits = self.task.logits(session.run(self._feeds(session, [ids for ids, _ in encoded])))
            for row, ((i, text), (_, truncated)) in enumerate(zip(live, encoded)):
                calls[i] = self._call(logits[row].reshape(-1), text, truncated)
        elapsed = (time.perf_counter() - start) * 1e3
        for call in calls:
            call.latency_ms = elapsed
        return calls
