"""What a decoder needs beside its ONNX graph: the tokenizer, the chat template and the configs.

The decoder IR folder (see the decoder contract) holds `tokenizer.json`, `tokenizer_config.json`
(with `chat_template`), `generation_config.json`, `config.json` and `ir.json`. This module reads
them with size caps, tokenizes with Hugging Face `tokenizers` and renders chat templates with
jinja2's sandbox, so a device needs neither torch nor transformers to generate.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ArtifactError, InputError
from .errors import NoChatTemplate

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.50 writes the template
GENERATION_CONFIG_FILE = "generation_config.json"
CONFIG_FILE = "config.json"
IR_FILE = "ir.json"

# A 256k-token vocabulary's tokenizer.json is about 30 MB; anything far larger is not a tokenizer.
MAX_TOKENIZER_BYTES = 256 << 20
MAX_CONFIG_BYTES = 16 << 20
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_text(path: Path, cap: int) -> str:
    size = path.stat().st_size
    if size > cap:
        raise ArtifactError(f"{path} is {size} bytes, over the cap of {cap}; it is not a tokenizer "
                            "or config file edgeagent wrote")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 text ({exc}); export the model again") from None


def _read_json(path: Path, cap: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(_read_text(path, cap))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} does not parse as JSON ({exc}); export the model again") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} holds a {type(value).__name__}, not a JSON object; export the "
                            "model again")
    return value


def _token_text(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with `content`."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # ONNX metadata_props carry the JSON list as a string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return ()
    if isinstance(value, bool):
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return ()


def _first_int(*values: Any) -> int | None:
    for value in values:
        ids = _ids(value)
        if ids:
            return ids[0]
    return None


@functools.lru_cache(maxsize=16)
def _compile_template(template: str):
    """Compile a chat template in jinja2's immutable sandbox, as transformers configures it.

    Chat templates come from model hubs and are untrusted code: the sandbox refuses attribute
    access to Python internals. `tojson` is replaced because jinja2's own escapes HTML
    characters, which would change the prompt the model was trained on.
    """
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    major_minor_patch = tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit())
    if major_minor_patch < (3, 1, 6):
        # Older versions have known sandbox escapes (CVE-2025-27516).
        raise InputError(f"chat templates need jinja2>=3.1.6 (installed: {jinja2.__version__}); "
                         "pip install -U jinja2", field="chat_template")

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return _dt.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise InputError(f"the chat template does not compile: {exc} (line {exc.lineno})",
                         field="chat_template") from None


def _plain(value: Any, where: str) -> Any:
    """Messages and tools as plain JSON data: the only values a sandboxed template should see."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where} must be plain JSON data (dicts, lists, strings, numbers): {exc}",
                         field="prompt") from None


def check_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Validate chat messages: a non-empty list of dicts with a string `role`.

    Raises:
        InputError: an empty list, a message that is not a dict or has no string role.
    """
    if not messages:
        raise InputError("messages is an empty list; give at least one {'role', 'content'} dict",
                         field="prompt")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"message {i} is a {type(message).__name__}; each message is a dict "
                             "such as {'role': 'user', 'content': '...'}", field="prompt")
        if not isinstance(message.get("role"), str):
            raise InputError(f"message {i} has no string 'role' (keys: {sorted(message)})",
                             field="prompt")
    return _plain(list(messages), "messages")


@dataclass(frozen=True)
class DecoderAssets:
    """The tokenizer, chat template and configs of one decoder IR folder.

    Build with `DecoderAssets.from_folder`. Attributes:
        folder: where the files were read.
        tokenizer: the `tokenizers.Tokenizer` of tokenizer.json.
        tokenizer_json: tokenizer.json's text (llguidance builds its token trie from it).
        chat_template: the jinja template, or None when the model has none.
        special_tokens: bos/eos/pad/unk token strings from tokenizer_config.json, for templates.
        eos_token_ids: ids that end generation (ir.json, else generation_config.json, else
            config.json, else the tokenizer's eos token).
        pad_token_id: id fed at left-padded positions (never attended to).
        max_length: the model's positions (ir.json `max_length`, else config.json's
            `max_position_embeddings`), or None when unknown.
        metadata: ir.json as read.
    """

    folder: Path
    tokenizer: Any
    tokenizer_json: str = field(repr=False)
    chat_template: str | None = field(repr=False)
    special_tokens: Mapping[str, str]
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    max_length: int | None
    metadata: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> DecoderAssets:
        """Read a decoder IR folder's tokenizer and configs.

        Args:
            folder: the IR folder `export --task text-generation` writes (or any folder holding
                tokenizer.json and the configs beside it).

        Raises:
            ArtifactError: no tokenizer.json, a file over its size cap or that does not parse,
                or no end-of-sequence id anywhere.
        """
        from tokenizers import Tokenizer

        root = Path(folder)
        tok_path = root / TOKENIZER_FILE
        if not tok_path.is_file():
            raise ArtifactError(f"{root} has no {TOKENIZER_FILE}; give the decoder IR folder that "
                                "`edgeagent export --task text-generation` writes")
        text = _read_text(tok_path, MAX_TOKENIZER_BYTES)
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise ArtifactError(f"{tok_path} is not a Hugging Face tokenizers file: {exc}") from None
        tok_config = _read_json(root / TOKENIZER_CONFIG_FILE)
        gen_config = _read_json(root / GENERATION_CONFIG_FILE)
        config = _read_json(root / CONFIG_FILE)
        ir = _read_json(root / IR_FILE)
        special = {key: value for key in SPECIAL_TOKEN_KEYS
                   if (value := _token_text(tok_config.get(key))) is not None}

        template = tok_config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
            template = named.get("default")
        if not isinstance(template, str) and (root / CHAT_TEMPLATE_FILE).is_file():
            template = _read_text(root / CHAT_TEMPLATE_FILE, MAX_CONFIG_BYTES)
        if not isinstance(template, str) or not template.strip():
            template = None

        def token_id(name: str) -> int | None:
            value = special.get(name)
            return None if value is None else tokenizer.token_to_id(value)

        eos = (_ids(ir.get("eos_token_ids")) or _ids(gen_config.get("eos_token_id"))
               or _ids(config.get("eos_token_id")) or _ids(token_id("eos_token")))
        if not eos:
            raise ArtifactError(f"{root} names no end-of-sequence token (ir.json eos_token_ids, "
                                "generation_config.json or config.json eos_token_id); export it again")
        pad = _first_int(ir.get("pad_token_id"), gen_config.get("pad_token_id"),
                         config.get("pad_token_id"), token_id("pad_token"))
        max_length = _first_int(ir.get("max_length"), config.get("max_position_embeddings"))
        return cls(folder=root, tokenizer=tokenizer, tokenizer_json=text, chat_template=template,
                   special_tokens=MappingProxyType(special), eos_token_ids=eos,
                   pad_token_id=eos[0] if pad is None else pad, max_length=max_length,
                   metadata=MappingProxyType(ir))

    @property
    def chat_template_renders_tools(self) -> bool:
        """Whether the chat template reads a `tools` variable (SmolLM2's does not; Qwen2.5's does)."""
        if self.chat_template is None:
            return False
        from jinja2 import meta

        env = _compile_template(self.chat_template).environment
        return "tools" in meta.find_undeclared_variables(env.parse(self.chat_template))

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it are recognised (as transformers does)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens left out."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_chat(self, messages: Sequence[Mapping[str, Any]], *,
                    tools: Sequence[Mapping[str, Any]] | None = None,
                    add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation, rendered with the model's chat template.

        Args:
            messages: dicts with `role` and `content`.
            tools: tool declarations in the `{"type": "function", "function": {...}}` form that
                chat templates read (default None: the template renders no tools).
            add_generation_prompt: end with the assistant turn's header (default True).

        Raises:
            NoChatTemplate: the model has no chat template.
            InputError: malformed messages, or the template raised an error.
        """
        import jinja2

        if self.chat_template is None:
            raise NoChatTemplate(self.folder)
        plain = check_messages(messages)
        compiled = _compile_template(self.chat_template)
        try:
            return compiled.render(messages=plain, tools=None if tools is None else _plain(list(tools), "tools"),
                                   documents=None, add_generation_prompt=add_generation_prompt,
                                   **self.special_tokens)
        except jinja2.exceptions.TemplateError as exc:
            raise InputError(f"the chat template refused the messages: {exc}", field="prompt") from None
