"""Grammar-constrained decoding with llguidance.

A `Grammar` is llguidance's serialized grammar (from a JSON schema, Lark or a regex). For each
row of a batch a `Constraint` holds one `llguidance.LLMatcher`: before each sample it computes
the bitmask of allowed tokens and applies it to the logits; after it, it consumes the token and
asks for the tokens the grammar forces next (`compute_ff_tokens`), which the loop appends
without sampling and feeds to the model in one multi-token step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError, InternalError

# Tool calls print as `{"name": "x", "arguments": {"a": 1}}`: the separators a model writes
# JSON with, and no free whitespace, so the grammar fixes the layout and the tokens between
# values are forced (fast-forwarded) instead of sampled. Free whitespace would also let a
# sampler emit blanks until max_new_tokens.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance():
    try:
        import llguidance
        import llguidance.numpy  # noqa: F401 - the bitmask helpers
    except ImportError:
        raise BackendUnavailable("grammar-constrained generation needs llguidance: "
                                 "pip install llguidance") from None
    return llguidance


@dataclass(frozen=True)
class Grammar:
    """A grammar llguidance enforces.

    Build with `Grammar.json_schema`, `Grammar.lark` or `Grammar.regex`. Attributes:
        source: llguidance's serialized grammar.
        kind: "json_schema", "lark" or "regex".
        schema: the JSON schema, for kind json_schema.
    """

    source: str = field(repr=False)
    kind: str
    schema: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("json_schema", "lark", "regex"):
            raise InputError(f"grammar kind must be json_schema, lark or regex, got {self.kind!r}",
                             field="grammar")
        if not isinstance(self.source, str) or not self.source:
            raise InputError("grammar source is empty", field="grammar")

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any], *,
                    options: Mapping[str, Any] | None = None) -> Grammar:
        """Output that is one JSON value valid under `schema`.

        Args:
            schema: a JSON schema (dict).
            options: llguidance JSON compile options (default: compact `", "` / `": "`
                separators, no free whitespace).

        Raises:
            InputError: the schema is not a JSON object.
        """
        ll = _llguidance()
        if not isinstance(schema, Mapping):
            raise InputError(f"a JSON schema is a dict, got {type(schema).__name__}", field="grammar")
        try:
            source = ll.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults=dict(JSON_OPTIONS if options is None else options))
        except ValueError as exc:
            raise InputError(f"llguidance refused the JSON schema: {exc}", field="grammar") from None
        return cls(source, "json_schema", json.loads(json.dumps(schema)))

    @classmethod
    def lark(cls, text: str) -> Grammar:
        """Output matching a Lark grammar (llguidance's dialect; `start` is the top rule)."""
        return cls(_llguidance().LLMatcher.grammar_from_lark(text), "lark")

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        """Output matching a regular expression (Rust regex syntax)."""
        return cls(_llguidance().LLMatcher.grammar_from_regex(pattern), "regex")

    def check(self, ll_tokenizer: Any) -> None:
        """Compile the grammar against a vocabulary once, so errors come before generation.

        Raises:
            InputError: llguidance cannot compile it (an unsupported keyword, a syntax error).
        """
        ll = _llguidance()
        is_error, messages = ll.LLMatcher.validate_grammar_with_warnings(self.source, ll_tokenizer)
        if is_error:
            raise InputError(f"llguidance cannot enforce this {self.kind} grammar: "
                             f"{'; '.join(messages)}", field="grammar")


def ll_tokenizer(assets: Any, vocab_size: int) -> Any:
    """llguidance's tokenizer from tokenizer.json, sized to the model's logits.

    `n_vocab` is the logits' width: models pad their vocabulary (to a multiple of 64, say), and
    the padding tokens get mask bit 0, so they are never sampled.

    Raises:
        InputError: the tokenizer has more tokens than the model's logits.
    """
    ll = _llguidance()
    tokens = assets.tokenizer.get_vocab_size(with_added_tokens=True)
    if tokens > vocab_size:
        raise InputError(f"the tokenizer has {tokens} tokens but the model's logits only "
                         f"{vocab_size}; the tokenizer does not belong to this model", field="assets")
    return ll.LLTokenizer(assets.tokenizer_json, n_vocab=vocab_size,
                          eos_token=list(assets.eos_token_ids))


class Constraint:
    """One row's LLMatcher, its mask buffer and the time spent computing masks."""

    def __init__(self, grammar: Grammar, ll_tok: Any, vocab_size: int) -> None:
        self._ll = _llguidance()
        self.matcher = self._ll.LLMatcher(ll_tok, grammar.source, log_level=0)
        self._raise_if_error("building the matcher")
        self._mask = self._ll.numpy.allocate_token_bitmask(1, vocab_size)
        self.mask_seconds = 0.0

    def _raise_if_error(self, when: str) -> None:
        if self.matcher.is_error():
            # A grammar that compiled (Grammar.check) and a token drawn from its own mask should
            # never fail; an error here is a bug, in edgeagent or in llguidance.
            raise InternalError(f"llguidance matcher error while {when}: {self.matcher.get_error()}")

    @property
    def stopped(self) -> bool:
        """The grammar is complete and allows nothing more (not even a choice to go on)."""
        return self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()

    def apply(self, logits: np.ndarray) -> None:
        """Set the logits of tokens the grammar forbids to -inf, in place (`[vocab]` float)."""
        start = time.perf_counter()
        self._ll.numpy.fill_next_token_bitmask(self.matcher, self._mask, 0)
        self._ll.numpy.apply_token_bitmask_inplace(logits[None, :], self._mask)
        self.mask_seconds += time.perf_counter() - start

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            self._raise_if_error(f"consuming token {token}")
            raise InternalError(f"llguidance refused token {token} that its own mask allowed")

    def forced(self, limit: int) -> list[int]:
        """The tokens the grammar forces next (at most `limit`), consumed already."""
        start = time.perf_counter()
        tokens = list(self.matcher.compute_ff_tokens())[:max(limit, 0)]
        if tokens and not self.matcher.consume_tokens(tokens):
            self._raise_if_error("consuming fast-forward tokens")
        self.mask_seconds += time.perf_counter() - start
        return tokens
