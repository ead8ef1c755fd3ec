"""Tiny random generative decoders built in code, written as Hugging Face folders. No download.

Each builder writes `config.json` (with `architectures`), `model.safetensors`,
`generation_config.json` and a tokenizer (`tokenizer.json`, `tokenizer_config.json` with a
ChatML chat template) into FOLDER and returns FOLDER. Same seed → same weights and tokenizer.

- `tiny_llama(folder)`: Llama with grouped-query attention (4 query heads over 2 KV heads) and
  tied input/output embeddings — SmolLM2's shape in miniature. Checks GQA head repetition, the
  tied LM head (a Gather and a MatMul sharing one weight) and RoPE.
- `tiny_qwen2(folder)`: Qwen2 (bias on q/k/v projections, untied LM head). Checks the second
  supported family and biases in attention.
- `tiny_tokenizer()`: the shared byte-level BPE tokenizer (any text encodes, no unknown token),
  trained in code on a few agent-style sentences and JSON tool calls.

Weights are drawn with a larger initializer range than transformers' default (0.02), so the
logits have real margins: a greedy continuation then depends on the model, not on rounding.
Needs torch, transformers and tokenizers (the `train` extra).

Example:
    from tests.decoders import tiny_llama
    folder = tiny_llama(tmp_path / "llama")   # transformers.AutoModelForCausalLM.from_pretrained(folder)
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_SIZE = 384
MAX_POSITIONS = 128
INIT_RANGE = 0.1
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0
# SmolLM2-Instruct's template (ChatML), shortened: no default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "turn on the kitchen lights", "dim the living room lights to 30%", "set a timer for 3 minutes",
    "what is the temperature in the bedroom", "open the garage door", "lock the front door",
    "play some jazz in the office", "add milk to the shopping list", "is the back door locked?",
    '{"name": "HassTurnOn", "arguments": {"area": "kitchen", "domain": "light"}}',
    '{"name": "HassLightSet", "arguments": {"area": "living room", "brightness": 30}}',
    '{"name": "HassStartTimer", "arguments": {"minutes": 3}}',
    "You are a helpful assistant that answers with one tool call.",
    "The quick brown fox jumps over the lazy dog. 0123456789 []{}:,\"'",
]


def tiny_tokenizer():
    """The byte-level BPE tokenizer the tiny decoders share, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[BOS_ID],
                                   eos_token=SPECIAL_TOKENS[EOS_ID], pad_token=SPECIAL_TOKENS[PAD_ID],
                                   model_max_length=MAX_POSITIONS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(folder: str | Path, *, seed: int = 0, layers: int = 2, max_positions: int = MAX_POSITIONS) -> Path:
    """A random Llama decoder with GQA and tied embeddings, saved as a Hugging Face folder.

    Args:
        folder: where to write (created).
        seed: torch seed for the weights (default 0).
        layers: decoder layers (default 2).
        max_positions: the context length (default 128; training on the ha-intents chat needs ~512).
    """
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         initializer_range=INIT_RANGE, rms_norm_eps=1e-5,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return _write(folder, config, "LlamaForCausalLM", seed)


def tiny_qwen2(folder: str | Path, *, seed: int = 0, layers: int = 2) -> Path:
    """A random Qwen2 decoder (q/k/v bias, GQA, untied LM head), saved as a Hugging Face folder.

    Args:
        folder: where to write (created).
        seed: torch seed for the weights (default 0).
        layers: decoder layers (default 2).
    """
    from transformers import Qwen2Config

    config = Qwen2Config(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False,
                         initializer_range=INIT_RANGE, rms_norm_eps=1e-6, use_sliding_window=False,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return _write(folder, config, "Qwen2ForCausalLM", seed)


def _write(folder: str | Path, config, class_name: str, seed: int) -> Path:
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.architectures = [class_name]
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    # The norms start at 1 and biases at 0; randomise them so a wrong norm or bias shows.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                param.normal_(0.0, INIT_RANGE)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(folder)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    _inline_chat_template(folder)
    return folder


def _inline_chat_template(folder: Path) -> None:
    """Keep the chat template inside tokenizer_config.json, where the decoder IR contract has it
    (transformers 5 writes it to chat_template.jinja instead)."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2))
    (folder / "chat_template.jinja").unlink(missing_ok=True)


def tiny_llama_gguf(path: str | Path, *, seed: int = 0, layers: int = 2) -> Path:
    """`tiny_llama`'s model and tokenizer as a GGUF file (float32 tensors), as llama.cpp's
    convert_hf_to_gguf.py lays it out: ggml tensor names, q/k rows permuted for its RoPE, no
    output.weight (tied), the BPE vocabulary and merges. Loads in transformers to the same model.

    Args:
        path: the `.gguf` file to write.
        seed, layers: as `tiny_llama`.
    """
    import tempfile

    import gguf
    import numpy as np
    import transformers

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_llama(Path(tmp) / "hf", seed=seed, layers=layers)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(0)  # all float32
    vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(vocab["vocab"].items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in vocab["merges"]])
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def permute(w: np.ndarray, heads: int) -> np.ndarray:  # llama.cpp's LlamaModel.permute
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = permute(w, cfg.num_attention_heads)
            elif gg == "attn_k":
                w = permute(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
