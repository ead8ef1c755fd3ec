"""Text as a task's reader takes it: the tokenizer file, control characters, and whether an
utterance is in the model's language at all.

Readers call these before a model sees anything: a terminal escape (`\\x1b[31m`) must not become a
`percentage` slot of "31m", and Chinese text or a row of emoji sent to an English router must not
get a confident intent. `TextGate` strips what is not text and says when what is left is not
something the model can understand: no letter of the model's script, or mostly `[UNK]` tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import safeio
from ..errors import InputError

MAX_TOKENIZER_BYTES = 64 << 20  # MiniLM's tokenizer.json is 0.7 MB, large multilingual ones ~17 MB
# Share of an utterance's word pieces above which it is not understood: emoji and scripts a
# vocabulary lacks map wholly to [UNK]; a command with a few rare words ("could you play a song"
# in a small vocabulary, 3 of 5 unknown) is still the model's to read.
MAX_UNKNOWN_SHARE = 2 / 3

# ECMA-48 escape sequences: CSI (colours, cursor moves), OSC (titles, links), and the two-byte
# ones; 0x9B is the one-byte CSI.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                      r"|\x1b[@-Z\\-_]|[\ud800-\udfff]")

# The Unicode script (the first word of a letter's name) that each language's letters are in.
_LATIN = ("af ca cs cy da de en es et eu fi fr ga gl hr hu id is it lt lv ms nb nl nn no pl pt ro sk sl sq sv "
          "sw tl tr vi").split()
SCRIPTS: dict[str, frozenset[str]] = {
    **{code: frozenset({"LATIN"}) for code in _LATIN},
    **{code: frozenset({"CYRILLIC"}) for code in ("ru", "uk", "bg", "sr", "mk", "be", "kk")},
    "el": frozenset({"GREEK"}), "he": frozenset({"HEBREW"}), "th": frozenset({"THAI"}),
    **{code: frozenset({"ARABIC"}) for code in ("ar", "fa", "ur")},
    **{code: frozenset({"DEVANAGARI"}) for code in ("hi", "mr", "ne")},
    "zh": frozenset({"CJK"}), "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}), "ko": frozenset({"HANGUL"}),
}


def load_tokenizer(path: str | Path, *, error: Callable[[str], Exception] | None = None):
    """A `tokenizers.Tokenizer` from a tokenizer.json that is a regular file of at most 64 MiB.

    Args:
        path: the tokenizer.json.
        error: reason → exception (default: an InputError naming the file).

    Raises:
        InputError: `tokenizers` is not installed.
        what `error` builds: not a regular file, too large, not UTF-8, or not a tokenizer the
            tokenizers library reads.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("reading text needs tokenizers: pip install 'edgeagent[agent]'") from None
    fail = error or (lambda reason: InputError(f"tokenizer {path} {reason}", field=str(path)))
    text = safeio.read_text(path, max_bytes=MAX_TOKENIZER_BYTES, what="tokenizer", error=fail)
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise fail(f"is not a tokenizer file the tokenizers library reads: {exc}") from None


def clean_text(text: str) -> str:
    """`text` without terminal escape sequences, control and format characters or lone surrogates
    (each becomes a space, or U+FFFD for a surrogate); printable text comes back as it is."""
    if text.isprintable():
        return text
    text = _ESCAPES.sub(lambda m: "\ufffd" if "\ud800" <= m.group() <= "\udfff" else " ", text)
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp", "Zs"):
            kept.append(" ")
        elif category not in ("Cf", "Co", "Cn"):  # format (bidi overrides, zero widths), private, unassigned
            kept.append(ch)
    return "".join(kept)


def in_script(text: str, scripts: frozenset[str] | None) -> bool:
    """Whether `text` has at least one letter of `scripts` (None: any text passes)."""
    if scripts is None:
        return True
    for ch in text:
        if ch.isalpha() and unicodedata.name(ch, "").split(" ", 1)[0] in scripts:
            return True
    return False


class TextGate:
    """What a reader does with text before and after tokenizing it.

    Args:
        tokenizer: the reader's `tokenizers.Tokenizer`.
        language: the model's language as an ISO 639-1 code (None or an unknown code: no script check).
    """

    def __init__(self, tokenizer: Any, language: str | None) -> None:
        self.scripts = SCRIPTS.get(str(language).lower()) if language else None
        unknown = getattr(getattr(tokenizer, "model", None), "unk_token", None)
        self.unk_id = tokenizer.token_to_id(unknown) if isinstance(unknown, str) else None

    def clean(self, text: Any) -> str | None:
        """The text to read, or None when it is not text the model can understand (not a string,
        nothing left once cleaned, no letter of the model's script)."""
        if not isinstance(text, str):
            return None
        cleaned = clean_text(text)
        if not cleaned.strip() or not in_script(cleaned, self.scripts):
            return None
        return cleaned

    def mostly_unknown(self, encoding: Any) -> bool:
        """Whether more than MAX_UNKNOWN_SHARE of a `tokenizers` encoding's word pieces are the unknown token."""
        if self.unk_id is None:
            return False
        pieces = [i for i, special in zip(encoding.ids, encoding.special_tokens_mask) if not special]
        return bool(pieces) and sum(i == self.unk_id for i in pieces) / len(pieces) > MAX_UNKNOWN_SHARE


def highest_id(tokenizer: Any) -> int:
    """The largest token id the tokenizer can produce (what the model's embedding must cover)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max(vocab.values()) if vocab else 0
