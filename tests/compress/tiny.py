"""Tiny models built in code for the compression tests: BERT-family joint encoders and decoders.

- `joint(kind)`: a JointEncoder (intent + slot heads) over edgeagent's compact BERT ("compact") or
  transformers' BertModel ("bert"): 3 layers, width 64, 4 heads of 16, FFN 128, a 1,200-token
  vocabulary (the task's export example uses token 1012). Checks every pruning path in seconds.
- `examples(n)`: random training-format examples (ids, mask, intent, BIO tags) for that model.
- `task()`: an intent-slots task whose label widths fit `joint`: export specs and metrics.
- `decoder(family)`: a Llama (grouped-query attention, 4 query heads over 2 K/V heads, tied
  embeddings, SmolLM2's shape in miniature) or Qwen2 (biases on q/k/v, untied head) causal LM.
- `dead_heads` / `dead_neurons`: zero some heads' or neurons' weights so they contribute nothing:
  pruning them must leave the outputs unchanged.
"""

from __future__ import annotations

import numpy as np

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 1200, 64, 3, 4, 128
INTENTS, TAGS = 5, 7


def joint(kind: str = "compact", *, seed: int = 0, layers: int = LAYERS, hidden: int = HIDDEN, heads: int = HEADS,
          ffn: int = FFN):
    import torch
    import transformers

    from edgeagent.distill.models import compact_bert, joint_encoder

    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=ffn, attn_implementation="eager")
    encoder = compact_bert(config) if kind == "compact" else transformers.BertModel(config, add_pooling_layer=False)
    model = joint_encoder(encoder, INTENTS, TAGS)
    with torch.no_grad():  # biases start at zero; make them matter, so slicing them is tested
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.02)
    return model.eval()


def examples(n: int = 64, *, seed: int = 0, length: int = 10) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = int(rng.integers(4, length + 1))
        out.append({"input_ids": rng.integers(1, VOCAB, size).astype(np.int64),
                    "attention_mask": np.ones(size, np.int64), "intent": np.int64(rng.integers(0, INTENTS)),
                    "tags": rng.integers(0, TAGS, size).astype(np.int64)})
    return out


def task():
    from edgeagent.tasks.intent_slots import IntentSlotTask

    return IntentSlotTask([f"Intent{i}" for i in range(INTENTS)], ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"])


def dead_heads(model, layer: int, heads: list[int]) -> None:
    """Zero the query, key and value rows (and biases) and the output columns of `heads`."""
    import torch

    from edgeagent.distill.structure import attention_parts, bert_layers, head_size

    target = bert_layers(model)[layer]
    size = head_size(target)
    q, k, v, o = attention_parts(target)
    with torch.no_grad():
        for h in heads:
            rows = slice(h * size, (h + 1) * size)
            for linear in (q, k, v):
                linear.weight[rows] = 0
                linear.bias[rows] = 0
            o.weight[:, rows] = 0


def dead_neurons(model, layer: int, neurons: list[int]) -> None:
    """Zero the intermediate rows (and biases; GELU(0) = 0) and the output columns of `neurons`."""
    import torch

    from edgeagent.distill.structure import bert_layers, ffn_parts

    inner, outer = ffn_parts(bert_layers(model)[layer])
    with torch.no_grad():
        inner.weight[neurons] = 0
        inner.bias[neurons] = 0
        outer.weight[:, neurons] = 0


def decoder(family: str = "llama", *, seed: int = 0, layers: int = 3):
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.1,
                  attn_implementation="eager")
    if family == "llama":
        config = transformers.LlamaConfig(**common, head_dim=16, tie_word_embeddings=True)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**common, tie_word_embeddings=False)
        model = transformers.Qwen2ForCausalLM(config)
    return model.eval()


def token_examples(n: int = 32, *, seed: int = 0, length: int = 12, vocab: int = 256) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(3, vocab, length).astype(np.int64), "attention_mask": np.ones(length, np.int64)}
            for _ in range(n)]
