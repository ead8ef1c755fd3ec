"""Errors of the generation loop and of constrained tool calls.

They are children of `edgeagent.errors.InputError` (a problem with what the caller supplied),
so code that handles user errors catches them. They live here rather than in
`edgeagent/errors.py` only while that module is being refactored; move them there at merge.
"""

from __future__ import annotations

from ..errors import InputError


class PromptTooLong(InputError):
    """A prompt has more tokens than the model has positions.

    Attributes:
        prompt_tokens: the prompt's length in tokens (the longest row, for a batch).
        max_length: the model's maximum number of positions.
    """

    def __init__(self, prompt_tokens: int, max_length: int, *, row: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_length = max_length
        which = "the prompt" if row is None else f"prompt {row} of the batch"
        super().__init__(
            f"{which} is {prompt_tokens} tokens but the model takes at most {max_length} positions "
            f"(max_length), and at least one must be left to generate; shorten the prompt to at "
            f"most {max_length - 1} tokens", field="prompt")


class NoChatTemplate(InputError):
    """Messages were given to a model whose tokenizer has no chat template."""

    def __init__(self, folder: object) -> None:
        super().__init__(
            f"messages were given but the model in {folder} has no chat template (neither "
            "tokenizer_config.json's `chat_template` nor chat_template.jinja); pass the prompt as a "
            "string, or add the template to tokenizer_config.json", field="prompt")


class ToolSchemaError(InputError):
    """A tool's declaration is not valid (its parameters are not a JSON Schema, a bad name)."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"tool {tool!r}: {reason}", field="tools")
