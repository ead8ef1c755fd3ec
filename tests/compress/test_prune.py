"""Structured pruning of BERT-family encoders: matrices shrink, unchanged channels keep their outputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")

import edgeagent  # noqa: E402
from edgeagent.compress import PruneSpec, parse_prune  # noqa: E402
from edgeagent.distill.structure import attention_parts, bert_layers, ffn_parts, num_heads  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402

from . import tiny  # noqa: E402

pytestmark = pytest.mark.torch
KINDS = ("compact", "bert")


def outputs(model, data):
    from edgeagent.distill.trainer import collate

    batch = collate([{k: e[k] for k in ("input_ids", "attention_mask")} for e in data], torch)
    with torch.no_grad():
        return [t.numpy() for t in model(batch["input_ids"], batch["attention_mask"])]


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_shrinks_every_matrix_it_names(kind):
    model = tiny.joint(kind)
    out = edgeagent.compress(model, prune={"heads": 0.5, "ffn": 0.5, "layers": 0.34}, data=tiny.examples())
    layers = bert_layers(out)
    assert len(layers) == 2 and out.encoder.config.num_hidden_layers == 2
    for layer in layers:
        q, k, v, o = attention_parts(layer)
        inner, outer = ffn_parts(layer)
        assert num_heads(layer) == 2
        assert q.weight.shape == k.weight.shape == v.weight.shape == (32, 64) and q.bias.shape == (32,)
        assert o.weight.shape == (64, 32)
        assert inner.weight.shape == (64, 64) and outer.weight.shape == (64, 64)
    steps = out.compression["steps"][0]
    assert steps["parameters_after"] < 0.7 * steps["parameters_before"]
    # The input model is left as it was: the result is a copy.
    assert len(bert_layers(model)) == 3 and attention_parts(bert_layers(model)[0])[0].out_features == 64
    assert all(np.isfinite(o).all() for o in outputs(out, tiny.examples(4)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_removing_channels_that_contribute_nothing_keeps_the_outputs(kind, importance):
    model = tiny.joint(kind)
    for layer in range(3):
        tiny.dead_heads(model, layer, [1, 3])
        tiny.dead_neurons(model, layer, list(range(0, 128, 2)))
    data = tiny.examples(32, seed=1)
    before = outputs(model, data)
    out = edgeagent.compress(model, prune={"heads": 0.5, "ffn": 0.5, "importance": importance}, data=data)
    for layer in out.compression["steps"][0]["layers"]:
        assert layer["heads_removed"] == [1, 3]
    after = outputs(out, data)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_layers_by_index_and_global_scope():
    model = tiny.joint("compact")
    out = edgeagent.compress(model, prune="layers=0+2", data=tiny.examples())
    assert out.compression["steps"][0]["layers_kept"] == [1]
    # Global ranking: heads of one layer made useless go first, so layers end with different counts.
    model = tiny.joint("compact")
    tiny.dead_heads(model, 0, [0, 1, 2])
    out = edgeagent.compress(model, prune=PruneSpec(heads=0.25, scope="global", importance="magnitude"))
    assert [num_heads(layer) for layer in bert_layers(out)] == [1, 4, 4]


def test_round_to_keeps_widths_in_multiples():
    out = edgeagent.compress(tiny.joint("compact"), prune=PruneSpec(ffn=0.6, round_to=16, importance="magnitude"))
    assert {ffn_parts(layer)[0].out_features for layer in bert_layers(out)} == {48}


@pytest.mark.parametrize("field, value", [("heads", 1.0), ("ffn", -0.1), ("layers", 1.5), ("heads", float("nan")),
                                          ("ffn", "half")])
def test_ratios_outside_zero_to_one_are_refused(field, value):
    with pytest.raises(InputError, match=r"\[0, 1\)") as caught:
        PruneSpec(**{field: value})
    assert caught.value.field == field


def test_recipes_that_remove_everything_are_refused():
    with pytest.raises(InputError, match="every head of layer") as caught:
        edgeagent.compress(tiny.joint("compact"), prune=PruneSpec(heads=0.9, importance="magnitude"))
    assert caught.value.field == "heads"
    model = tiny.joint("compact")
    tiny.dead_heads(model, 0, [0, 1, 2, 3])
    with pytest.raises(InputError, match="every head of layer 0"):
        edgeagent.compress(model, prune=PruneSpec(heads=0.5, scope="global", importance="magnitude"))
    with pytest.raises(InputError, match="would remove all 3 layers") as caught:
        edgeagent.compress(tiny.joint("compact"), prune="layers=0+1+2")
    assert caught.value.field == "layers"
    with pytest.raises(InputError, match="layers 0..2"):
        edgeagent.compress(tiny.joint("compact"), prune="layers=5+")
    with pytest.raises(InputError, match="write layers=2\\+"):
        parse_prune("layers=2")


def test_bad_specs_name_the_parameter():
    with pytest.raises(InputError, match="unknown key 'attn'"):
        parse_prune("attn=0.5")
    with pytest.raises(InputError, match="importance"):
        PruneSpec(importance="random")
    with pytest.raises(InputError, match="Taylor importance needs data"):
        edgeagent.compress(tiny.joint("compact"), prune="heads=0.5")
    with pytest.raises(InputError, match="nothing to compress"):
        edgeagent.compress(tiny.joint("compact"))
    with pytest.raises(InputError, match="recover bf16='yes'"):
        edgeagent.compress(tiny.joint("compact"), prune="heads=0.5", data=tiny.examples(), recover={"bf16": "yes"})
    assert parse_prune("heads=0.5,ffn=0.25,layers=0.5") == PruneSpec(heads=0.5, ffn=0.25, layers=0.5)
    assert parse_prune("layers=1+3").layers == (1, 3) and parse_prune("layers=2+").layers == (2,)
    assert parse_prune("layers=0").layers == 0.0  # a share: nothing removed


def test_taylor_scores_rank_by_the_data():
    """A head whose output columns were zeroed has no gradient through it: Taylor scores it 0."""
    model = tiny.joint("compact")
    with torch.no_grad():
        attention_parts(bert_layers(model)[1])[3].weight[:, 16:32] = 0  # head 1 of layer 1 writes nothing
    out = edgeagent.compress(model, prune={"heads": 0.25}, data=tiny.examples())
    layer = out.compression["steps"][0]["layers"][1]
    assert layer["heads_removed"] == [1] and layer["head_scores"][1] == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_positions_keeps_the_first_rows_and_refuses_fewer_than_the_reader_feeds(kind):
    model = tiny.joint(kind)
    data = tiny.examples(8)
    out = edgeagent.compress(model, prune="positions=64", task=tiny.task())
    assert out.encoder.embeddings.position_embeddings.weight.shape == (64, 64)
    assert out.encoder.config.max_position_embeddings == 64
    for a, b in zip(outputs(model, data), outputs(out, data)):  # short sentences read the same rows
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(InputError, match="reader feeds up to 64 tokens") as caught:
        edgeagent.compress(model, prune="positions=32", task=tiny.task())
    assert caught.value.field == "positions"
    with pytest.raises(InputError, match="has 512 rows"):
        edgeagent.compress(model, prune="positions=600")
    with pytest.raises(InputError, match="whole number"):
        parse_prune("positions=6.5")
