"""Save and load joint encoders as folders: config.json + safetensors, never pickles.

A model folder comes from outside (a teacher someone handed over), so loading reads config.json
through safeio's JSON caps and checks every size in it before anything is allocated: a 200-byte
config declaring a 50-million-token vocabulary × 8,192 must be an InputError, not 1.6 TB.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import safeio
from ..errors import InputError
from .models import COMPACT_ARCHITECTURE, _torch, compact_bert, joint_encoder

FORMAT = "edgeagent.joint/1"
MAX_CONFIG_BYTES = 1 << 20
# Far above any encoder edgeagent trains or distils (MiniLM: 30,522 × 384, 6 layers), and small
# enough that what they admit can be allocated.
ENCODER_LIMITS = {"vocab_size": 1_000_000, "hidden_size": 16_384, "num_hidden_layers": 256,
                  "num_attention_heads": 256, "intermediate_size": 65_536, "max_position_embeddings": 131_072,
                  "type_vocab_size": 1024}
MAX_PARAMETERS = 4_000_000_000
MAX_HEAD_CLASSES = 1_000_000


def save_joint(model, folder: str | os.PathLike, *, labels: dict[str, Any] | None = None,
               tokenizer: str | os.PathLike | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (a JointEncoder) to `folder`: encoder config, all weights as safetensors,
    label names, and the tokenizer.json it takes ids from.

    A model `edgeagent.compress` pruned or factorised carries a `compression` record (its recipe
    and the shapes it left: `edgeagent.distill.structure`); it is written as the config's
    `compression` entry, from which `load_joint` rebuilds those shapes.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(staging / "model.safetensors"))
    config = {"format": FORMAT, "encoder": model.encoder.config.to_dict(),
              "num_intents": model.intent_head.out_features, "num_tags": model.slot_head.out_features,
              "token_map": model.token_map is not None, "labels": labels or {}, **(extra or {})}
    compression = getattr(model, "compression", None)
    if compression:
        config["compression"] = compression
    (staging / "config.json").write_text(json.dumps(config, indent=1, default=str))
    if tokenizer:
        shutil.copyfile(tokenizer, staging / "tokenizer.json")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def check_encoder_config(encoder: Any, where: str, *, weights_bytes: int | None = None) -> None:
    """The sizes of a BERT-family encoder config, checked before a model is built from it.

    Args:
        encoder: the config as a dict (config.json's "encoder", or a Hugging Face config.json).
        where: the file, for messages.
        weights_bytes: the size of the weights file, which must be able to hold the parameters the
            config declares at 2 bytes each (the smallest dtype transformers stores).

    Raises:
        InputError: not an object, a size that is not a positive integer or is over its cap, more
            parameters than MAX_PARAMETERS or than the weights file holds.
    """
    if not isinstance(encoder, Mapping):
        raise InputError(f"{where}: the encoder config must be an object, got {type(encoder).__name__}",
                         field="config")
    sizes: dict[str, int] = {}
    for key, cap in ENCODER_LIMITS.items():
        if key not in encoder:
            continue
        value = encoder[key]
        if type(value) is not int or not 1 <= value <= cap:
            raise InputError(f"{where}: {key} must be an integer from 1 to {cap}, got {value!r:.40}", field=key)
        sizes[key] = value
    hidden, heads = sizes.get("hidden_size", 768), sizes.get("num_attention_heads", 12)
    if hidden % heads:
        raise InputError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}",
                         field="num_attention_heads")
    architectures = encoder.get("architectures")
    if architectures is not None and (not isinstance(architectures, list)
                                      or not all(isinstance(a, str) for a in architectures)):
        raise InputError(f"{where}: architectures must be a list of names", field="architectures")
    layers, inner = sizes.get("num_hidden_layers", 12), sizes.get("intermediate_size", 4 * hidden)
    embeddings = (sizes.get("vocab_size", 30_522) + sizes.get("max_position_embeddings", 512)
                  + sizes.get("type_vocab_size", 2)) * hidden
    parameters = embeddings + layers * (4 * hidden * hidden + 2 * hidden * inner)
    if parameters > MAX_PARAMETERS:
        raise InputError(f"{where}: the config declares about {parameters:,} parameters (a "
                         f"{sizes.get('vocab_size', 30_522):,}-token vocabulary × {hidden}), over the cap of "
                         f"{MAX_PARAMETERS:,}; it is not an encoder edgeagent can build", field="config")
    if weights_bytes is not None and 2 * parameters > weights_bytes * 1.05 + (1 << 20):
        raise InputError(f"{where}: the config declares about {parameters:,} parameters, more than its "
                         f"{weights_bytes:,}-byte weights file can hold; the config belongs to another model",
                         field="config")


def read_safetensors(path: Path, *, what: str = "weights") -> dict[str, Any]:
    """Tensors of a safetensors file (never a pickle), as a typed error when it is not one.

    Raises:
        InputError: missing or not a regular file, or a header or data the safetensors library refuses.
    """
    from safetensors.torch import load_file

    safeio.check_regular(path, what=what)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError, on hostile files
        raise InputError(f"{what} {path} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
                         "save it again", field=str(path)) from None


def load_joint(folder: str | os.PathLike):
    """A JointEncoder saved by `save_joint`, in eval mode, with `.config` holding its metadata.

    Raises:
        InputError: not such a folder; a config.json that is not a regular file, too large, not JSON
            (or nests too deep, or holds huge numbers), of another format, with fields of the wrong
            type or sizes over their caps; weights that are not safetensors or do not fit the config.
    """
    torch, transformers = _torch()

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise InputError(f"{folder} is not a saved model folder (no config.json); make one with "
                         "`edgeagent finetune` or `edgeagent distill`", field=str(folder))
    config = safeio.read_json(config_path, what="model config", max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise InputError(f"{folder}/config.json has format {found!r}, expected {FORMAT!r}", field="format")
    weights = folder / "model.safetensors"
    weights_size = safeio.check_regular(weights, what="weights").st_size
    check_encoder_config(config.get("encoder"), str(config_path), weights_bytes=weights_size)
    for key in ("num_intents", "num_tags"):
        if type(config.get(key)) is not int or not 1 <= config[key] <= MAX_HEAD_CLASSES:
            raise InputError(f"{config_path}: {key} must be an integer from 1 to {MAX_HEAD_CLASSES}, got "
                             f"{config.get(key)!r:.40}", field=key)
    try:
        encoder_config = transformers.BertConfig.from_dict(config["encoder"])
        if COMPACT_ARCHITECTURE in (encoder_config.architectures or []):
            encoder = compact_bert(encoder_config)
        else:
            encoder = transformers.BertModel(encoder_config, add_pooling_layer=False)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a config transformers refuses
        raise InputError(f"{config_path}: transformers cannot build its encoder ({type(exc).__name__}: {exc})",
                         field="encoder") from None
    token_map = None
    if config.get("token_map"):
        token_map = torch.zeros(1, dtype=torch.int64)  # replaced by load_state_dict below
    model = joint_encoder(encoder, config["num_intents"], config["num_tags"], token_map)
    if config.get("compression"):
        from .structure import apply_structure

        # Pruned heads, neurons and layers and low-rank factors: the saved weights fit these shapes.
        apply_structure(model, config["compression"]["structure"])
        model.compression = config["compression"]
    state = read_safetensors(weights)
    if "token_map" in state:
        model.token_map = state["token_map"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights in {folder} do not fit its config: {exc}", field=str(folder)) from None
    model.eval()
    model.saved_config = config
    return model
