"""Errors edgeagent raises.

`EdgeAgentError` and its children are problems with what the user asked for or supplied; each
message says what was asked, what is available and how to fix it. `InternalError` is not a
child: it marks a bug in edgeagent itself (the split Polygraphy makes), so callers that handle
user errors do not swallow bugs.
"""

from __future__ import annotations


# How to get PyTorch without its CUDA build (several GB) where there is no NVIDIA GPU.
TORCH_HINT = ("pip install 'edgeagent[train]' (on a machine without an NVIDIA GPU, install torch's CPU build "
              "first: pip install torch --index-url https://download.pytorch.org/whl/cpu)")


class EdgeAgentError(Exception):
    """Base of every error caused by input, configuration or environment."""


class ModelRejected(EdgeAgentError):
    """A model file was refused before any runtime parsed it."""

    def __init__(self, path: object, reason: str, *, tensor: str | None = None,
                 location: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.tensor = tensor
        self.location = location
        where = ""
        if tensor is not None:
            where += f" tensor {tensor!r}"
        if location is not None:
            where += f" location {location!r}"
        super().__init__(f"model {self.path} rejected:{where} {reason}".replace(":  ", ": ").strip())


class ExportMismatch(EdgeAgentError):
    """The exported ONNX model does not reproduce the PyTorch model within tolerance."""

    def __init__(self, message: str, report: list[dict]) -> None:
        self.report = report
        super().__init__(message)


class InputError(EdgeAgentError):
    """Feeds or a data file do not match the model's signature."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class BackendUnavailable(EdgeAgentError):
    """A backend is unknown, or its SDK or device is missing here."""


class UnsupportedPrecision(EdgeAgentError):
    """A backend cannot compile the requested precision."""


class UnsupportedModel(EdgeAgentError):
    """A backend cannot convert or build some operator or layer of the model."""


class CalibrationError(EdgeAgentError):
    """INT8 calibration data is missing, empty or does not match the model."""


class ArtifactError(EdgeAgentError):
    """An artifact folder is missing, malformed or has been modified since it was built."""


class CompressionRejected(EdgeAgentError):
    """A compression recipe did not measure faster (or smaller) than its input by more than the noise.

    `measurement` holds what was measured: sizes, p50s and the confidence interval of the change.
    """

    def __init__(self, message: str, measurement: dict | None = None) -> None:
        self.measurement = measurement or {}
        super().__init__(message)


# -- generation (edgeagent.generate) ------------------------------------------------------

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


class InternalError(Exception):
    """A bug in edgeagent. Not an EdgeAgentError on purpose: please report it."""
