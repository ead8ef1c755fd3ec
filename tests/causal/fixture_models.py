"""`module:function` sources for export tests (`edgeagent.export_causal_lm("tests.causal.fixture_models:…")`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

DRIFT = 0.5  # added to one logit in eager mode only


def tiny_llama_model():
    """(model, tokenizer) of tests.decoders.tiny_llama, built in a temporary folder."""
    import transformers

    from tests.decoders import tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_llama(Path(tmp) / "llama")
        return (transformers.AutoModelForCausalLM.from_pretrained(folder),
                transformers.AutoTokenizer.from_pretrained(folder))


def drifting_llama():
    """A model whose eager forward differs from what torch.export traces: a hook on the LM head
    adds DRIFT to token 7's logit unless exporting. Its export must fail parity."""
    import torch

    model, tokenizer = tiny_llama_model()

    def drift(module, args, output):
        if torch.compiler.is_exporting():
            return output
        bumped = output.clone()
        bumped[..., 7] += DRIFT
        return bumped

    model.lm_head.register_forward_hook(drift)
    return model, tokenizer


def not_a_model():
    return "a string"
