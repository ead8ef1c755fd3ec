"""Pruning generative decoders (Llama, Qwen2): whole KV groups, FFN neurons, layers; still generates."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")

import edgeagent  # noqa: E402
from edgeagent.compress import PruneSpec  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402

from . import tiny  # noqa: E402

pytestmark = pytest.mark.torch
FAMILIES = ("llama", "qwen2")


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_groups_neurons_and_layers_go_and_the_model_still_generates(tmp_path, family):
    model = tiny.decoder(family)
    out = edgeagent.compress(model, prune={"heads": 0.5, "ffn": 0.5, "layers": 0.34}, data=tiny.token_examples())
    config = out.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (2, 2, 1)
    assert config.intermediate_size == 64 and config.head_dim == 16 and len(out.model.layers) == 2
    attention = out.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (32, 64) and attention.k_proj.weight.shape == (16, 64)
    assert attention.v_proj.weight.shape == (16, 64) and attention.o_proj.weight.shape == (64, 32)
    if family == "qwen2":
        assert attention.q_proj.bias.shape == (32,) and attention.k_proj.bias.shape == (16,)
    assert out.model.layers[0].mlp.down_proj.weight.shape == (64, 64)
    ids = torch.tensor([[5, 9, 17, 33]])
    generated = out.generate(ids, max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 10)
    # Greedy decoding with the KV cache gives what full forward passes give (the cache's layer indices follow).
    with torch.no_grad():
        tokens = ids
        for _ in range(6):
            tokens = torch.cat([tokens, out(input_ids=tokens, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(generated, tokens)
    out.save_pretrained(tmp_path / "pruned")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    np.testing.assert_allclose(logits(reloaded, ids), logits(out, ids), atol=1e-5)
    assert reloaded.config.edgeagent_compression["recipe"]["prune"]["heads"] == 0.5
    assert sum(p.numel() for p in out.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_removing_a_kv_group_and_neurons_that_contribute_nothing_keeps_the_logits(importance):
    model = tiny.decoder("llama")
    with torch.no_grad():
        for layer in model.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            a.k_proj.weight[16:32] = 0  # KV group 1: K/V head 1 and query heads 2, 3
            a.v_proj.weight[16:32] = 0
            a.q_proj.weight[32:64] = 0
            a.o_proj.weight[:, 32:64] = 0
            mlp.gate_proj.weight[64:] = 0  # SiLU(0) · up = 0
            mlp.up_proj.weight[64:] = 0
            mlp.down_proj.weight[:, 64:] = 0
    ids = torch.tensor([[3, 8, 21, 40, 41, 77]])
    before = logits(model, ids)
    out = edgeagent.compress(model, prune={"heads": 0.5, "ffn": 0.5, "importance": importance},
                             data=tiny.token_examples(8))
    assert [row["kv_groups_removed"] for row in out.compression["steps"][0]["layers"]] == [[1]] * 3
    np.testing.assert_allclose(logits(out, ids), before, atol=1e-5)


def test_decoder_refusals():
    model = tiny.decoder("llama")
    with pytest.raises(InputError, match="all 2 KV groups") as caught:
        edgeagent.compress(model, prune=PruneSpec(heads=0.75, importance="magnitude"))
    assert caught.value.field == "heads"
    with pytest.raises(InputError, match="scope='global'"):
        edgeagent.compress(model, prune=PruneSpec(ffn=0.5, scope="global", importance="magnitude"))
    with pytest.raises(InputError, match="low-rank"):
        edgeagent.compress(model, low_rank={"ffn": 8})


def test_recovery_distils_the_pruned_decoder_towards_the_original():
    model = tiny.decoder("llama", layers=2)
    data = tiny.token_examples(48, seed=2)
    ids = torch.as_tensor(np.stack([e["input_ids"] for e in data[:16]]))
    reference = torch.softmax(torch.as_tensor(logits(model, ids)), -1)

    def divergence(candidate):
        log_p = torch.log_softmax(torch.as_tensor(logits(candidate, ids)), -1)
        return float((reference * (reference.clamp_min(1e-12).log() - log_p)).sum(-1).mean())

    spec = PruneSpec(ffn=0.5, importance="magnitude")
    pruned = edgeagent.compress(model, prune=spec)
    recovered = edgeagent.compress(model, prune=spec, data=data,
                                   recover={"epochs": 3, "lr": 3e-3, "batch_size": 8, "group_by_length": False},
                                   progress=False)
    assert divergence(recovered) < divergence(pruned)
    under_bf16 = edgeagent.compress(model, prune=spec, data=data, progress=False,
                                    recover={"epochs": 3, "lr": 3e-3, "batch_size": 8, "group_by_length": False,
                                             "bf16": True})
    assert [epoch["bf16"] for epoch in under_bf16.compression["recovery"]] == [True, True, True]
    assert divergence(under_bf16) < divergence(pruned)
