"""Calibrate an agent folder's artifacts on held-out data: a temperature and a rejection threshold each.

For each artifact, the task's sequence-level head (the intent logits) is run on labelled
examples the models never trained on (the workload's dev split); `fit_temperature` makes its
confidence calibrated, and the threshold is the confidence below which at most `max_rejection`
of the in-domain examples fall (examples labelled `not_understood` are the out-of-domain ones).
Both go into `agent.json` under `calibration`, by artifact folder, with ECE before and after;
`EdgeAgent.load` applies the chosen artifact's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import atomic_write_text, open_artifact
from ..errors import InputError
from ..tasks import NOT_UNDERSTOOD
from .runtime import AGENT_FILE, read_agent_folder

MAX_REJECTION = 0.01


def _logits(session, examples: Sequence[Mapping[str, Any]], output: str) -> np.ndarray:
    parts = []
    for start in range(0, len(examples), 64):
        chunk = examples[start:start + 64]
        width = max(len(e["input_ids"]) for e in chunk)
        ids = np.zeros((len(chunk), width), np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(chunk):
            ids[row, :len(e["input_ids"])], mask[row, :len(e["input_ids"])] = e["input_ids"], 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if any(s.name == "token_type_ids" for s in session.inputs):
            feeds["token_type_ids"] = np.zeros_like(ids)
        parts.append(session.run(feeds)[output])
    return np.concatenate(parts)


def calibrate(folder: str | os.PathLike, examples: Sequence[Mapping[str, Any]], *, label: str | None = None,
              max_rejection: float = MAX_REJECTION, fitted_on: str = "held-out examples") -> dict[str, Any]:
    """Fit and record every artifact's temperature and threshold; return what was written.

    Args:
        folder: the agent folder.
        examples: labelled training-format examples (input_ids, attention_mask, the head's label).
        label: the label key (default: the task's first sequence-level head's).
        max_rejection: the share of in-domain examples the threshold may reject (default 0.01).
        fitted_on: what the examples are, recorded with the figures.

    Raises:
        InputError: a task with no sequence-level head or no temperature, or no in-domain examples.
    """
    from ..pipeline import load_session
    from ..tasks.calibration import ece_of_logits, fit_temperature, softmax

    folder = Path(folder)
    record, task = read_agent_folder(folder)
    head = next((h for h in task.heads if not h.per_token), None)
    if head is None or not hasattr(task, "temperature"):
        raise InputError(f"task {task.name!r} has no sequence-level head with a temperature to calibrate",
                         field="task")
    key = label or head.label
    labels = np.asarray([int(e[key]) for e in examples])
    classes = list(getattr(task, "intents", None) or getattr(task, "labels", None) or [])
    negative = labels == classes.index(NOT_UNDERSTOOD) if NOT_UNDERSTOOD in classes else np.zeros(len(labels), bool)
    if negative.all():
        raise InputError("calibration needs in-domain examples, not only not_understood ones", field="examples")
    found: dict[str, Any] = {}
    for path in sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()):
        with load_session(open_artifact(path)) as session:
            logits = _logits(session, examples, head.output)
        temperature = fit_temperature(logits, labels)
        probs = softmax(logits, temperature)
        confidence = probs.max(1)
        threshold = float(np.quantile(confidence[~negative], max_rejection))
        rejected = (probs.argmax(1) == (classes.index(NOT_UNDERSTOOD) if NOT_UNDERSTOOD in classes else -1)) | \
            (confidence < threshold)
        found[path.name] = {
            "temperature": temperature, "threshold": threshold, "fitted_on": fitted_on, "examples": int(len(labels)),
            "ece_before": ece_of_logits(logits, labels, 1.0), "ece_after": ece_of_logits(logits, labels, temperature),
            "in_domain_rejection": float(rejected[~negative].mean()),
            "out_of_domain_rejection": float(rejected[negative].mean()) if negative.any() else None}
    record["calibration"] = found
    atomic_write_text(folder / AGENT_FILE, json.dumps(record, indent=1, default=str) + "\n")
    return found
