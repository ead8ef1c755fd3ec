"""Save and load joint encoders as folders: config.json + safetensors, never pickles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError
from .models import COMPACT_ARCHITECTURE, _torch, compact_bert, joint_encoder

FORMAT = "edgeagent.joint/1"


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


def load_joint(folder: str | os.PathLike):
    """A JointEncoder saved by `save_joint`, in eval mode, with `.config` holding its metadata.

    Raises:
        InputError: not such a folder, or weights that do not fit the config.
    """
    torch, transformers = _torch()
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(f"{folder} is not a saved model folder (no config.json); make one with "
                         "`edgeagent finetune` or `edgeagent distill`", field=str(folder))
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise InputError(f"{folder}/config.json has format {config.get('format')!r}, expected {FORMAT!r}",
                         field="format")
    encoder_config = transformers.BertConfig.from_dict(config["encoder"])
    if COMPACT_ARCHITECTURE in (encoder_config.architectures or []):
        encoder = compact_bert(encoder_config)
    else:
        encoder = transformers.BertModel(encoder_config, add_pooling_layer=False)
    token_map = None
    if config.get("token_map"):
        token_map = torch.zeros(1, dtype=torch.int64)  # replaced by load_state_dict below
    model = joint_encoder(encoder, config["num_intents"], config["num_tags"], token_map)
    if config.get("compression"):
        from .structure import apply_structure

        # Pruned heads, neurons and layers and low-rank factors: the saved weights fit these shapes.
        apply_structure(model, config["compression"]["structure"])
        model.compression = config["compression"]
    state = load_file(str(folder / "model.safetensors"))
    if "token_map" in state:
        model.token_map = state["token_map"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights in {folder} do not fit its config: {exc}", field=str(folder)) from None
    model.eval()
    model.saved_config = config
    return model
