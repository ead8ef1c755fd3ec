"""Tiny decoders exported once per session (tests/decoders.py builds them)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def decoders_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("decoders")


@pytest.fixture(scope="session")
def llama_dir(decoders_dir):
    from tests.decoders import tiny_llama

    return tiny_llama(decoders_dir / "llama")


@pytest.fixture(scope="session")
def qwen2_dir(decoders_dir):
    from tests.decoders import tiny_qwen2

    return tiny_qwen2(decoders_dir / "qwen2")


@pytest.fixture(scope="session")
def llama_ir(llama_dir, decoders_dir):
    from edgeagent.causal import export_causal_lm

    return export_causal_lm(llama_dir, decoders_dir / "llama-ir")


@pytest.fixture(scope="session")
def qwen2_ir(qwen2_dir, decoders_dir):
    from edgeagent.causal import export_causal_lm

    return export_causal_lm(qwen2_dir, decoders_dir / "qwen2-ir")


@pytest.fixture(scope="session")
def tiny_gguf(decoders_dir):
    pytest.importorskip("gguf")
    from tests.decoders import tiny_llama_gguf

    return tiny_llama_gguf(decoders_dir / "gguf" / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def prompts_ids(llama_ir):
    """Token ids of the default parity prompts under the tiny tokenizer."""
    from edgeagent.causal import parity

    return parity.encode_prompts(llama_ir.path, list(parity.DEFAULT_PROMPTS))
