"""Models the benchmark scripts share. Built in code: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import edgeagent


def minilm_sized_encoder(folder: Path) -> Path:
    """all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, 30522 vocab), random weights."""
    import torch
    import transformers

    config = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                     num_attention_heads=12, intermediate_size=1536, num_labels=8)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    example = {"input_ids": torch.randint(0, 30522, (1, 32)),
               "attention_mask": torch.ones(1, 32, dtype=torch.long),
               "token_type_ids": torch.zeros(1, 32, dtype=torch.long)}
    axes = {k: {0: "batch", 1: "sequence"} for k in example} | {"logits": {0: "batch"}}
    path = folder / "minilm_sized.onnx"
    edgeagent.export(model, example, path, dynamic_axes=axes)
    return path
