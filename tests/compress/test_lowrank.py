"""Low-rank factorisation: the SVD's error, the ranks refused, and factorised models that still run."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import edgeagent  # noqa: E402
from edgeagent.compress import LowRankSpec, parse_low_rank  # noqa: E402
from edgeagent.compress.lowrank import break_even, factorise_module, max_saving_rank  # noqa: E402
from edgeagent.distill.structure import low_rank_classes  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402

from . import tiny  # noqa: E402
from .test_prune import outputs  # noqa: E402

pytestmark = pytest.mark.torch


def test_reconstruction_error_falls_with_the_rank_and_matches_the_spectrum():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 64)
    x = torch.randn(32, 96)
    errors, output_errors = [], []
    for rank in (2, 8, 16, 32):
        new, error, singular = factorise_module(linear, rank)
        reconstructed = (new.up.weight @ new.down.weight).detach()
        weight = linear.weight.detach()
        measured = float(torch.linalg.norm(reconstructed - weight) / torch.linalg.norm(weight))
        expected = float(torch.sqrt((singular[rank:] ** 2).sum() / (singular ** 2).sum()))
        assert measured == pytest.approx(error, rel=1e-4) and error == pytest.approx(expected, rel=1e-6)
        with torch.no_grad():
            output_errors.append(float((new(x) - linear(x)).norm()))
        errors.append(error)
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]
    assert output_errors == sorted(output_errors, reverse=True)
    full, error, _ = factorise_module(linear, 64)  # full rank reproduces the layer (not a saving rank)
    assert error == 0.0
    with torch.no_grad():
        np.testing.assert_allclose(full(x).numpy(), linear(x).numpy(), atol=1e-5)


def test_embedding_factors_are_a_table_and_a_projection():
    embedding = torch.nn.Embedding(300, 32, padding_idx=0)
    new, error, _ = factorise_module(embedding, 32)
    _, factorised = low_rank_classes()
    assert isinstance(new, factorised) and new.table.weight.shape == (300, 32) and new.project.weight.shape == (32, 32)
    ids = torch.tensor([[1, 5, 299]])
    with torch.no_grad():
        np.testing.assert_allclose(new(ids).numpy(), embedding(ids).numpy(), atol=1e-5)
        np.testing.assert_allclose(new.weight.numpy(), embedding.weight.numpy(), atol=1e-5)


def test_ranks_that_cannot_save_or_exceed_the_matrix_are_refused():
    model = tiny.joint("compact")  # FFN Linears are 128×64: break-even 42.7, so ranks 1..42 save
    assert max_saving_rank(128, 64) == 42 and break_even(128, 64) == pytest.approx(42.67, abs=0.01)
    with pytest.raises(InputError, match=r"allowed ranks are 1\.\.42") as caught:
        edgeagent.compress(model, low_rank={"ffn_in": 43})
    assert caught.value.field == "ffn_in"
    with pytest.raises(InputError, match=r"at most min\(m, n\) = 64"):
        edgeagent.compress(model, low_rank={"ffn": 65})
    with pytest.raises(InputError, match="needs rank"):  # 99.99 % of a random matrix's energy needs nearly all of it
        edgeagent.compress(model, low_rank={"attention": 0.9999})
    with pytest.raises(InputError, match="neither a kind") as caught:
        edgeagent.compress(model, low_rank={"encoder.encoder.layer.9.intermediate.dense": 8})
    assert caught.value.field == "encoder.encoder.layer.9.intermediate.dense"
    with pytest.raises(InputError, match="a rank must be at least 1"):
        LowRankSpec({"ffn": 0})
    with pytest.raises(InputError, match=r"in \(0, 1\)"):
        LowRankSpec({"ffn": 1.5})
    with pytest.raises(InputError, match="expected a number"):
        parse_low_rank("ffn=big")


def test_kinds_and_module_names_select_modules_and_energy_picks_the_smallest_rank():
    model = tiny.joint("compact")
    name = "encoder.encoder.layer.1.intermediate.dense"
    out = edgeagent.compress(model, low_rank={"embeddings": 48, name: 16, "attention": 0.5})
    ranks = out.compression["structure"]["low_rank"]
    assert ranks["encoder.embeddings.word_embeddings"] == 48 and ranks[name] == 16
    rows = {row["module"]: row for row in out.compression["steps"][0]["modules"]}
    attention = [row for row in rows.values() if row["target"] == "attention"]
    assert len(attention) == 12  # q, k, v, output × 3 layers
    for row in attention:
        singular = torch.linalg.svdvals(model.get_submodule(row["module"]).weight.detach().double())
        energy = (singular ** 2).cumsum(0) / (singular ** 2).sum()
        assert energy[row["rank"] - 1] >= 0.5 and (row["rank"] == 1 or energy[row["rank"] - 2] < 0.5)
    assert all(np.isfinite(o).all() for o in outputs(out, tiny.examples(4)))
    with pytest.raises(InputError, match="already factorised"):
        edgeagent.compress(out, low_rank={name: 8})
    with pytest.raises(InputError, match="prune before factorising"):
        edgeagent.compress(out, prune={"ffn": 0.5, "importance": "magnitude"})


def test_high_rank_factors_keep_the_outputs():
    model = tiny.joint("bert")
    data = tiny.examples(8)
    out = edgeagent.compress(model, low_rank={"embeddings": 60, "ffn": 42})
    before, after = outputs(model, data), outputs(out, data)
    assert np.corrcoef(before[0].ravel(), after[0].ravel())[0, 1] > 0.9
