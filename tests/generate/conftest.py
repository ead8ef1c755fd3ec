"""Fixtures of the generation tests: tiny random decoders, their HF folders and IR folders.

The Hugging Face folders come from `tests.decoders` (tiny Llama with GQA and tied embeddings,
tiny Qwen2; vocabulary 384, 128 positions); the IR folders from `edgeagent.causal.export_causal_lm`
(parity-checked against transformers). Built once per session (about 15 s per family on 2
cores, the torch.onnx export).
"""

from __future__ import annotations

import pytest

from tests import decoders
from tests.generate import ir_variants


def _needs_torch() -> None:
    pytest.importorskip("torch", reason="the tiny decoders are built with torch: install edgeagent[train]")
    pytest.importorskip("transformers", reason="the tiny decoders are built with transformers")


@pytest.fixture(scope="session")
def llama_hf(tmp_path_factory):
    _needs_torch()
    return decoders.tiny_llama(tmp_path_factory.mktemp("hf-llama"), seed=0)


@pytest.fixture(scope="session")
def llama_ir(tmp_path_factory, llama_hf):
    from edgeagent.causal import export_causal_lm

    return export_causal_lm(llama_hf, tmp_path_factory.mktemp("ir-llama") / "ir").path


@pytest.fixture(scope="session")
def qwen_hf(tmp_path_factory):
    _needs_torch()
    return decoders.tiny_qwen2(tmp_path_factory.mktemp("hf-qwen2"), seed=1)


@pytest.fixture(scope="session")
def qwen_ir(tmp_path_factory, qwen_hf):
    from edgeagent.causal import export_causal_lm

    return export_causal_lm(qwen_hf, tmp_path_factory.mktemp("ir-qwen2") / "ir").path


@pytest.fixture(scope="session")
def no_template_ir(tmp_path_factory, llama_ir):
    """The llama IR with the chat template removed."""
    return ir_variants.with_template(llama_ir, tmp_path_factory.mktemp("ir-no-template"), None)


@pytest.fixture(scope="session")
def tools_ir(tmp_path_factory, llama_ir):
    """The llama IR with a chat template that renders tools (as Qwen2.5's does)."""
    return ir_variants.with_template(llama_ir, tmp_path_factory.mktemp("ir-tools"),
                                          ir_variants.TOOLS_CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def llama_tools(tools_ir):
    from edgeagent.generate import load_decoder

    with load_decoder(tools_ir) as decoder:
        yield decoder


@pytest.fixture(scope="session")
def llama(llama_ir):
    from edgeagent.generate import load_decoder

    with load_decoder(llama_ir) as decoder:
        yield decoder


@pytest.fixture(scope="session")
def qwen(qwen_ir):
    from edgeagent.generate import load_decoder

    with load_decoder(qwen_ir) as decoder:
        yield decoder


@pytest.fixture(scope="session")
def llama_torch(llama_hf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(llama_hf).eval()


@pytest.fixture(scope="session")
def qwen_torch(qwen_hf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(qwen_hf).eval()
