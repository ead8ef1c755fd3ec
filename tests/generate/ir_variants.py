"""Decoder IR folders with another chat template, for the generation tests.

`with_template` copies an IR folder (`edgeagent.export_causal_lm`'s) with its tokenizer_config's
chat template replaced; `TOOLS_CHAT_TEMPLATE` renders tools as Qwen2.5's template does (the tiny
decoders' and SmolLM2's templates ignore `tools`).
"""

from __future__ import annotations

import json
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
