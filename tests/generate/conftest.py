"""Fixtures of the generation tests: tiny random decoders, their HF folders and IR folders.

Built once per session (about 25 s per family on 2 cores: training the tokenizer, saving the
model, the torch.onnx export). The decoders come from `standin_decoders` until the exporter
branch's `tests/decoders.py` and `export_causal_lm` are merged.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch", reason="the tiny decoders are built with torch: install edgeagent[train]")
pytest.importorskip("transformers")

from tests.generate import standin_decoders  # noqa: E402


@pytest.fixture(scope="session")
def llama_hf(tmp_path_factory):
    return standin_decoders.hf_folder(tmp_path_factory.mktemp("hf-llama"), "llama")


@pytest.fixture(scope="session")
def llama_ir(tmp_path_factory, llama_hf):
    return standin_decoders.export_ir(llama_hf, tmp_path_factory.mktemp("ir-llama"))


@pytest.fixture(scope="session")
def qwen_hf(tmp_path_factory):
    return standin_decoders.hf_folder(tmp_path_factory.mktemp("hf-qwen2"), "qwen2", seed=1)


@pytest.fixture(scope="session")
def qwen_ir(tmp_path_factory, qwen_hf):
    return standin_decoders.export_ir(qwen_hf, tmp_path_factory.mktemp("ir-qwen2"))


@pytest.fixture(scope="session")
def no_template_ir(tmp_path_factory, llama_ir):
    """The llama IR with the chat template removed."""
    folder = tmp_path_factory.mktemp("ir-no-template")
    for item in llama_ir.iterdir():
        shutil.copy(item, folder / item.name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


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
