"""Structured pruning of BERT-family encoders: attention heads, FFN neurons and whole layers.

Works on edgeagent's compact BERT (the students) and on transformers' BertModel (the teachers),
inside a JointEncoder or classifier. Heads and neurons are removed physically with torch-pruning's
DepGraph: the group of one layer's query output channels also holds the key and value output
channels and the attention output's input channels (the dependency graph finds them through
the attention matmuls), and the group of its intermediate output channels holds the output
dense's input channels. Whole heads are removed (every channel of a head, the same heads in
query, key and value), so the head width stays and only the head count falls. Scores come from
torch-pruning's group importance (magnitude or first-order Taylor) over the same groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError, UnsupportedModel
from ..distill.structure import (attention_parts, bert_encoder, bert_layers, drop_layers, ffn_parts, head_size,
                                 num_heads, set_num_heads)
from .importance import accumulate_gradients, encoder_loss, layer_magnitude
from .specs import PruneSpec


def torch_pruning():
    """torch-pruning, or a typed error saying how to get it.

    Raises:
        InputError: torch-pruning is not installed.
    """
    try:
        import torch_pruning
    except ImportError:
        raise InputError("structured pruning needs torch-pruning: pip install 'edgeagent[train]' "
                         "(or pip install torch-pruning)", field="torch_pruning") from None
    return torch_pruning


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _example_inputs(model, data, torch):
    """Token ids and a mask to trace the dependency graph with (real ids where data is given)."""
    if data:
        ids = torch.as_tensor(data[0]["input_ids"][None, :], dtype=torch.int64)
    else:
        ids = torch.ones((1, 12), dtype=torch.int64)
    return ids, torch.ones_like(ids)


def _graph(model, example, tp):
    model.eval()

    def total(out):
        items = out if isinstance(out, (tuple, list)) else [out]
        return sum(o.float().sum() for o in items if hasattr(o, "sum"))

    return tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=total)


def _group(graph, tp, root, idxs, expected, what: str):
    """The DepGraph group of `root`'s output channels, checked to hold exactly the expected Linears."""
    import torch

    group = graph.get_pruning_group(root, tp.prune_linear_out_channels, idxs=list(idxs))
    found = {id(dep.target.module) for dep, _ in group if isinstance(dep.target.module, torch.nn.Linear)}
    if found != {id(m) for m in expected}:
        raise UnsupportedModel(f"torch-pruning grouped {len(found)} Linear layers with {what}, expected "
                               f"{len(expected)}: this encoder's layers are not BERT's; prune heads and neurons "
                               "of BERT-family encoders only")
    return group


def _check_plain_linears(layers, torch) -> None:
    for index, layer in enumerate(layers):
        for module in (*attention_parts(layer), *ffn_parts(layer)):
            if not isinstance(module, torch.nn.Linear):
                raise InputError(f"layer {index} has a factorised {type(module).__name__}: prune before "
                                 "factorising (low-rank), not after", field="prune")


def _layers_to_drop(spec: PruneSpec, scores: list[float]) -> list[int]:
    count = len(scores)
    if isinstance(spec.layers, tuple):
        bad = [i for i in spec.layers if i >= count]
        if bad:
            raise InputError(f"prune layers={list(spec.layers)}: the model has layers 0..{count - 1}", field="layers")
        drop = sorted(spec.layers)
    else:
        removed = int(round(spec.layers * count))
        drop = sorted(sorted(range(count), key=lambda i: (scores[i], i))[:removed])
    if len(drop) >= count:
        raise InputError(f"prune layers={spec.layers} would remove all {count} layers; remove at most {count - 1} "
                         f"(a share below {(count - 0.5) / count:.2f})", field="layers")
    return drop


def _kept_width(width: int, ratio: float, round_to: int) -> int:
    kept = int(round((1 - ratio) * width / round_to)) * round_to
    return min(width, max(round_to, kept))


def _plan_heads(spec: PruneSpec, head_scores: Mapping[int, Any], keep: Sequence[int]) -> dict[int, list[int]]:
    """Heads removed per (original) layer index."""
    removed: dict[int, list[int]] = {}
    if not spec.heads:
        return {i: [] for i in keep}
    if spec.scope == "layer":
        for i in keep:
            scores = head_scores[i]
            count = int(round(spec.heads * len(scores)))
            removed[i] = sorted(sorted(range(len(scores)), key=lambda h: (float(scores[h]), h))[:count])
    else:
        ranked = sorted(((float(s), i, h) for i in keep for h, s in enumerate(head_scores[i])))
        total = sum(len(head_scores[i]) for i in keep)
        removed = {i: [] for i in keep}
        for _, i, h in ranked[:int(round(spec.heads * total))]:
            removed[i].append(h)
        removed = {i: sorted(v) for i, v in removed.items()}
    for i in keep:
        if len(removed[i]) >= len(head_scores[i]):
            raise InputError(f"prune heads={spec.heads:g} ({spec.scope} scope) would remove every head of layer {i} "
                             f"({len(head_scores[i])} heads): keep at least one per layer, or remove the layer with "
                             "layers=", field="heads")
    return removed


def _plan_ffn(spec: PruneSpec, neuron_scores: Mapping[int, Any], keep: Sequence[int], torch) -> dict[int, list[int]]:
    """FFN neurons kept per (original) layer index."""
    kept: dict[int, list[int]] = {}
    if spec.scope == "layer" or not spec.ffn:
        for i in keep:
            scores = neuron_scores[i]
            width = _kept_width(len(scores), spec.ffn, spec.round_to) if spec.ffn else len(scores)
            kept[i] = sorted(torch.topk(scores, width).indices.tolist())
        return kept
    everything = torch.cat([neuron_scores[i] for i in keep])
    threshold_count = int(round(spec.ffn * len(everything)))
    order = torch.argsort(everything)
    cut = torch.zeros(len(everything), dtype=torch.bool)
    cut[order[:threshold_count]] = True
    offset = 0
    for i in keep:
        scores = neuron_scores[i]
        survivors = int((~cut[offset:offset + len(scores)]).sum())
        offset += len(scores)
        # Widths stay multiples of round_to: round the survivors up, never to zero.
        width = min(len(scores), max(spec.round_to, -(-survivors // spec.round_to) * spec.round_to))
        kept[i] = sorted(torch.topk(scores, width).indices.tolist())
    return kept


def trim_positions(model, positions: int) -> dict[str, Any]:
    """Keep the first `positions` rows of the encoder's position table (the config follows).

    Raises:
        InputError: more rows than the table has.
    """
    import torch

    encoder = bert_encoder(model)
    embeddings = encoder.embeddings
    table = embeddings.position_embeddings
    if positions > table.num_embeddings:
        raise InputError(f"prune positions={positions}: the position table has {table.num_embeddings} rows; keep "
                         f"1..{table.num_embeddings}", field="positions")
    new = torch.nn.Embedding(positions, table.embedding_dim)
    with torch.no_grad():
        new.weight.copy_(table.weight[:positions])
    new.weight.requires_grad_(table.weight.requires_grad)
    embeddings.position_embeddings = new
    for name in ("position_ids", "token_type_ids"):  # transformers' BertEmbeddings keeps index buffers
        buffer = getattr(embeddings, name, None)
        if buffer is not None and buffer.ndim == 2 and buffer.shape[1] > positions:
            embeddings.register_buffer(name, buffer[:, :positions].clone(), persistent=False)
    encoder.config.max_position_embeddings = positions
    return {"positions_before": int(table.num_embeddings), "positions": positions}


def prune_encoder(model, spec: PruneSpec, *, data: Sequence[Mapping[str, Any]] | None = None,
                  output_names: Sequence[str] | None = None, label_map: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """Remove the least important heads, FFN neurons and layers of a BERT-family model, in place.

    Args:
        model: a JointEncoder or classifier over edgeagent's compact BERT or transformers' BertModel.
        spec: what to remove and how to rank it.
        data: training-format examples (input_ids, attention_mask, labels where known) for Taylor
            importance and for tracing; magnitude needs none.
        output_names: the model's output names, in order (the task's heads).
        label_map: output name → label key in the examples.

    Returns:
        A report: the layers kept (original indices), heads and neurons kept per layer, scores,
        parameter counts before and after.

    Raises:
        InputError: Taylor importance without data, a recipe that would remove every head of a
            layer or every layer, layer indices out of range, modules already factorised.
        UnsupportedModel: the encoder's layers are not BERT-shaped (torch-pruning found other groups).
    """
    from ..distill.models import _torch

    torch, _ = _torch()
    tp = torch_pruning()
    layers = bert_layers(model)
    _check_plain_linears(layers, torch)
    before = parameter_count(model)
    label_map = dict(label_map or {})
    if isinstance(spec.layers, tuple):
        _layers_to_drop(spec, [0.0] * len(layers))  # refuse bad indices before any work
    # Layers named by index need no ranking; everything else is ranked by `spec.importance`.
    ranked = bool(spec.heads or spec.ffn or (spec.layers and not isinstance(spec.layers, tuple)))
    if spec.importance == "taylor" and ranked:
        layer_scores = accumulate_gradients(
            model, list(layers), data or [],
            lambda m, batch: encoder_loss(m, batch, output_names=output_names, label_map=label_map),
            batches=spec.batches, batch_size=spec.batch_size)
        importance = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    else:
        layer_scores = [layer_magnitude(layer) for layer in layers]
        importance = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    example = _example_inputs(model, data, torch)
    graph = _graph(model, example, tp)
    head_scores, neuron_scores = {}, {}
    for index, layer in enumerate(layers):
        q, k, v, o = attention_parts(layer)
        inner, outer = ffn_parts(layer)
        with torch.no_grad():
            channel = importance(_group(graph, tp, q, range(q.out_features), (q, k, v, o), "the query"))
            head_scores[index] = channel.reshape(num_heads(layer), head_size(layer)).sum(1).float()
            neuron_scores[index] = importance(_group(graph, tp, inner, range(inner.out_features), (inner, outer),
                                                     "the intermediate dense")).float()
    model.zero_grad(set_to_none=True)
    drop = _layers_to_drop(spec, layer_scores)
    keep = [i for i in range(len(layers)) if i not in drop]
    remove_heads = _plan_heads(spec, head_scores, keep)
    keep_neurons = _plan_ffn(spec, neuron_scores, keep, torch)
    if drop:
        drop_layers(model, keep)
        layers = bert_layers(model)
        graph = _graph(model, example, tp)
    report_layers = []
    for new_index, original in enumerate(keep):
        layer = layers[new_index]
        q, k, v, o = attention_parts(layer)
        inner, outer = ffn_parts(layer)
        size, heads = head_size(layer), num_heads(layer)
        gone = remove_heads[original]
        if gone:
            channels = [h * size + j for h in gone for j in range(size)]
            _group(graph, tp, q, channels, (q, k, v, o), "the query").prune()
            set_num_heads(layer, heads - len(gone))
        width = inner.out_features
        cut = sorted(set(range(width)) - set(keep_neurons[original]))
        if cut:
            _group(graph, tp, inner, cut, (inner, outer), "the intermediate dense").prune()
        report_layers.append({"layer": original, "heads_removed": gone, "heads": heads - len(gone),
                              "ffn": inner.out_features, "ffn_before": width,
                              "head_scores": [round(float(s), 6) for s in head_scores[original]]})
    encoder = bert_encoder(model)
    encoder.config.num_hidden_layers = len(keep)
    positions = trim_positions(model, spec.positions) if spec.positions is not None else None
    return {"step": "prune", "positions": positions, "importance": spec.importance, "scope": spec.scope,
            "layers_removed": drop, "layers_kept": keep,
            "layer_scores": [round(float(s), 6) for s in layer_scores], "layers": report_layers,
            "parameters_before": before, "parameters_after": parameter_count(model)}
