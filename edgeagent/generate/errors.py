"""The generation loop's errors, defined with the others in `edgeagent.errors` and named here too.

They are children of `edgeagent.errors.InputError` (a problem with what the caller supplied),
so code that handles user errors catches them.
"""

from __future__ import annotations

from ..errors import NoChatTemplate, PromptTooLong, ToolSchemaError

__all__ = ["NoChatTemplate", "PromptTooLong", "ToolSchemaError"]
