"""Shapes of compressed BERT-family encoders: describe them, and rebuild them before loading weights.

`edgeagent.compress` removes attention heads, FFN neurons and whole layers, and factorises
Linear layers and the word-embedding table into two low-rank factors. A saved model folder
(`save_joint`) then no longer fits the shapes its encoder config implies, so the folder records a
*structure*: per remaining layer its heads and FFN width, and the rank of every factorised
module. `apply_structure` resizes a freshly built model to that structure (with placeholder
weights) so that `load_joint` can load the saved weights into it. The weight-preserving surgery
itself (which heads to keep, the SVD) lives in `edgeagent.compress`; this module only knows
shapes, so `load_joint` needs neither torch-pruning nor the compression code.

Importing this module does not import torch.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import InputError

STRUCTURE_FORMAT = "edgeagent.structure/1"


def _torch():
    from .models import _torch as load

    return load()[0]


@functools.lru_cache(maxsize=None)
def low_rank_classes():
    """(LowRankLinear, FactorisedEmbedding): module classes, created once so isinstance works."""
    torch = _torch()
    nn = torch.nn

    class LowRankLinear(nn.Module):
        """y = up(down(x)): W (out × in) as two factors of rank r; `down` has no bias.

        Costs r·(in + out) multiply-adds per row instead of in·out: cheaper only while
        r < in·out / (in + out).
        """

        def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
            super().__init__()
            self.in_features, self.out_features, self.rank = in_features, out_features, rank
            self.down = nn.Linear(in_features, rank, bias=False)
            self.up = nn.Linear(rank, out_features, bias=bias)

        def forward(self, x):
            return self.up(self.down(x))

        @property
        def weight(self):
            """The rank-r product (out × in), for code that reads a Linear's weight (not a parameter)."""
            return self.up.weight @ self.down.weight

    class FactorisedEmbedding(nn.Module):
        """An embedding table V × H stored as V × r (`table`) times r × H (`project`).

        The lookup gathers r numbers per token and one r × H matmul lifts them to the width.
        """

        def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None) -> None:
            super().__init__()
            self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
            self.padding_idx = padding_idx
            self.table = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
            self.project = nn.Linear(rank, embedding_dim, bias=False)

        def forward(self, ids):
            return self.project(self.table(ids))

        @property
        def weight(self):
            """The reconstructed V × H table (not a parameter): what the word-neighbour search reads."""
            return self.table.weight @ self.project.weight.T

    return LowRankLinear, FactorisedEmbedding


def bert_layers(model):
    """The encoder layers of a joint/classifier model or of a bare BERT-family encoder.

    Raises:
        InputError: the model has no BERT-like `encoder.layer` list.
    """
    encoder = getattr(model, "encoder", None)
    for candidate in (encoder, getattr(encoder, "encoder", None)):
        layers = getattr(candidate, "layer", None)
        if layers is not None:
            return layers
    raise InputError(f"{type(model).__name__} is not a BERT-family encoder (no encoder.layer); compression "
                     "supports edgeagent's compact BERT, transformers' BertModel and Llama/Qwen2 decoders",
                     field="model")


def bert_encoder(model):
    """The BERT-family encoder inside a joint/classifier model (or the model itself)."""
    inner = getattr(model, "encoder", None)
    if inner is not None and hasattr(inner, "embeddings"):
        return inner
    if hasattr(model, "embeddings"):
        return model
    raise InputError(f"{type(model).__name__} has no BERT-family encoder", field="model")


def attention_parts(layer):
    """(query, key, value, output) Linear layers of one BERT layer."""
    a = layer.attention
    return a.self.query, a.self.key, a.self.value, a.output.dense


def ffn_parts(layer):
    """(intermediate, output) Linear layers of one BERT layer's feed-forward block."""
    return layer.intermediate.dense, layer.output.dense


def head_size(layer) -> int:
    """Width of one attention head (fixed by the original config; pruning never changes it)."""
    if hasattr(layer, "head_size"):  # edgeagent's compact BERT
        return int(layer.head_size)
    return int(layer.attention.self.attention_head_size)


def num_heads(layer) -> int:
    if hasattr(layer, "heads"):
        return int(layer.heads)
    return int(layer.attention.self.num_attention_heads)


def set_num_heads(layer, heads: int) -> None:
    """Record a layer's head count where its forward reads it (compact BERT or transformers' BertModel)."""
    if hasattr(layer, "heads"):
        layer.heads = heads
    else:
        attention = layer.attention.self
        attention.num_attention_heads = heads
        attention.all_head_size = heads * attention.attention_head_size


def drop_layers(model, keep: list[int]) -> None:
    """Keep only the layers at `keep` (in order); the encoder config's layer count follows."""
    torch = _torch()
    encoder = bert_encoder(model)
    layers = bert_layers(model)
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    holder = encoder.encoder
    holder.layer = kept
    encoder.config.num_hidden_layers = len(kept)
    for index, layer in enumerate(kept):  # transformers' layers may carry their index (caches)
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index


def _resized_linear(linear, *, n_in: int | None = None, n_out: int | None = None):
    torch = _torch()
    return torch.nn.Linear(n_in or linear.in_features, n_out or linear.out_features, bias=linear.bias is not None)


def _set_module(root, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def describe(model) -> dict[str, Any]:
    """The structure of a (possibly compressed) BERT-family model: what `apply_structure` rebuilds.

    Returns:
        {"format", "head_size", "layers": [{"heads", "ffn"}, ...], "low_rank": {module name: rank}}.
    """
    low_rank_linear, factorised = low_rank_classes()
    layers = []
    for layer in bert_layers(model):
        inner, _ = ffn_parts(layer)
        layers.append({"heads": num_heads(layer), "ffn": int(inner.out_features)})
    low_rank = {name: int(module.rank) for name, module in model.named_modules()
                if isinstance(module, (low_rank_linear, factorised))}
    return {"format": STRUCTURE_FORMAT, "head_size": head_size(bert_layers(model)[0]), "layers": layers,
            "low_rank": low_rank}


def apply_structure(model, structure: dict[str, Any]) -> None:
    """Resize a freshly built model (encoder config with the kept layer count) to `structure`.

    Weights are placeholders: load the saved state dict afterwards.

    Args:
        model: a joint or classifier model built from the saved encoder config.
        structure: what `describe` returned for the compressed model.

    Raises:
        InputError: a structure of another format, or one that does not fit the model.
    """
    if not isinstance(structure, dict) or structure.get("format") != STRUCTURE_FORMAT:
        raise InputError(f"unknown model structure {structure.get('format') if isinstance(structure, dict) else structure!r};"
                         f" expected {STRUCTURE_FORMAT!r}", field="structure")
    layers = bert_layers(model)
    if len(structure["layers"]) != len(layers):
        raise InputError(f"the structure lists {len(structure['layers'])} layers but the encoder config has "
                         f"{len(layers)}", field="structure")
    for layer, shape in zip(layers, structure["layers"]):
        size = head_size(layer)
        if size != structure["head_size"]:
            raise InputError(f"head size {size} differs from the structure's {structure['head_size']}",
                             field="structure")
        width = int(shape["heads"]) * size
        q, k, v, o = attention_parts(layer)
        attention = layer.attention
        attention.self.query = _resized_linear(q, n_out=width)
        attention.self.key = _resized_linear(k, n_out=width)
        attention.self.value = _resized_linear(v, n_out=width)
        attention.output.dense = _resized_linear(o, n_in=width)
        set_num_heads(layer, int(shape["heads"]))
        inner, outer = ffn_parts(layer)
        layer.intermediate.dense = _resized_linear(inner, n_out=int(shape["ffn"]))
        layer.output.dense = _resized_linear(outer, n_in=int(shape["ffn"]))
    low_rank_linear, factorised = low_rank_classes()
    torch = _torch()
    for name, rank in structure.get("low_rank", {}).items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise InputError(f"the structure factorises {name!r}, which the model does not have",
                             field="structure") from None
        if isinstance(module, torch.nn.Embedding):
            _set_module(model, name, factorised(module.num_embeddings, module.embedding_dim, int(rank),
                                                module.padding_idx))
        elif isinstance(module, torch.nn.Linear):
            _set_module(model, name, low_rank_linear(module.in_features, module.out_features, int(rank),
                                                     module.bias is not None))
        else:
            raise InputError(f"the structure factorises {name!r}, a {type(module).__name__} (not Linear or "
                             "Embedding)", field="structure")
