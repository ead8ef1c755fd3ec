"""Teacher and student for the ha-intents workload (needs the train extra).

The teacher is all-MiniLM-L6-v2 (or any BERT-family id or folder) fine-tuned as a joint intent
classifier and slot tagger; the student is distilled from it with `edgeagent.distill`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..workloads import ha_intents

OUTPUTS = ("intent_logits", "slot_logits")
LABELS = {"intent_logits": "intent", "slot_logits": "tags"}
INPUTS = ("input_ids", "attention_mask")
# What a transfer set varies: entity names and to-do / shopping items, the slots whose values are
# the user's own words.
TRANSFER_LISTS = ("name", "todo_list_item", "shopping_list_item")
# Bumped whenever transfer_examples would sample other sentences for the same arguments, so that
# `edgeagent demo` rebuilds a cached student made from the old ones.
TRANSFER_VERSION = 2


def examples(split: str, tokenizer, *, seed: int = 0, language: str = "en") -> list[dict[str, np.ndarray]]:
    from ..distill.trainer import examples_from_encoded

    encoded = ha_intents.encode(ha_intents.generate(split, language=language, seed=seed), tokenizer, language)
    return examples_from_encoded(encoded)


def transfer_examples(teacher, tokenizer, per_intent: int, *, seed: int = 0, language: str = "en",
                      neighbours: int = 10, p: float = 0.5,
                      lists: tuple[str, ...] = TRANSFER_LISTS) -> list[dict[str, np.ndarray]]:
    """Extra distillation data: training sentences whose names and list items had words swapped
    for their neighbours in the teacher's embeddings (`edgeagent.distill.augment`). Never a dev or
    test value or sentence; labelled by the sampler and, through distillation, by the teacher."""
    from ..distill.augment import NeighbourWords
    from ..distill.trainer import examples_from_encoded

    words = NeighbourWords.from_teacher(teacher, tokenizer, k=neighbours, exclude=ha_intents.is_place_word)
    sentences = ha_intents.transfer_set(per_intent, lambda text, rng: words.vary(text, rng, p), language=language,
                                        seed=seed, lists=lists)
    return examples_from_encoded(ha_intents.encode(sentences, tokenizer, language))


def metric(predictions, examples_) -> float:
    """Mean of intent accuracy and slot F1: early stopping must not trade one for the other."""
    scores = score(predictions, examples_)
    return (scores["intent_accuracy"] + scores["slot_f1"]) / 2


def score(predictions, examples_, language: str = "en") -> dict[str, float]:
    _, tags = ha_intents.label_space(language)
    intent = np.stack([p["intent_logits"] for p in predictions])
    length = max(len(e["tags"]) for e in examples_)
    slots = np.zeros((len(examples_), length, len(tags)), np.float32)
    gold = np.full((len(examples_), length), ha_intents.IGNORE, np.int64)
    for row, (p, e) in enumerate(zip(predictions, examples_)):
        slots[row, :len(e["tags"])] = p["slot_logits"]
        gold[row, :len(e["tags"])] = e["tags"]
    words = [e.get("word_ids") for e in examples_]
    return ha_intents.joint_metrics(intent, slots, np.asarray([e["intent"] for e in examples_]), gold, tags,
                                    word_ids=words if all(w is not None for w in words) else None)


def new_teacher(base: str | os.PathLike | None = None, language: str = "en"):
    from ..distill.models import joint_encoder, load_encoder

    intents, tags = ha_intents.label_space(language)
    return joint_encoder(load_encoder(base), len(intents), len(tags))


def train_teacher(tokenizer, *, base=None, epochs: int = 3, lr: float = 8e-5, batch_size: int = 32, seed: int = 0,
                  checkpoint_dir=None, progress: bool = True):
    from ..distill import finetune

    teacher = new_teacher(base)
    return finetune(teacher, examples("train", tokenizer, seed=seed), eval=examples("dev", tokenizer, seed=seed),
                    epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, output_names=OUTPUTS, labels=LABELS,
                    metric=metric, checkpoint_dir=checkpoint_dir, progress=progress)


def label_names(language: str = "en") -> dict[str, Any]:
    intents, tags = ha_intents.label_space(language)
    return {"intents": list(intents), "tags": list(tags)}


def export_joint(model, path: str | os.PathLike) -> Path:
    """Parity-checked ONNX export with dynamic batch and sequence."""
    import torch

    from ..export import export

    example = (torch.ones(1, 12, dtype=torch.int64) * 1012, torch.ones(1, 12, dtype=torch.int64))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "intent_logits": {0: "batch"}, "slot_logits": {0: "batch", 1: "sequence"}}
    export(model, example, path, input_names=list(INPUTS), output_names=list(OUTPUTS), dynamic_axes=axes)
    return Path(path)
