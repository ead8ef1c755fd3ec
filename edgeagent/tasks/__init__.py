"""Tasks: what a model's inputs and outputs mean (see `base.Task`).

Built-in tasks register in the `edgeagent.tasks` entry-point group, as a third-party task would;
`task_from_json` rebuilds one from what an agent folder recorded. Importing this package imports
no optional SDK.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from .base import IGNORE, NOT_UNDERSTOOD, ExportSpec, Head, Reader, Task, ToolCall

ENTRY_POINT_GROUP = "edgeagent.tasks"

__all__ = ["IGNORE", "NOT_UNDERSTOOD", "ExportSpec", "Head", "Reader", "Task", "ToolCall", "get_task_class",
           "list_tasks", "task_from_json"]


@functools.cache
def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_registered())


def get_task_class(name: str) -> type:
    """The class registered as task `name`.

    Raises:
        InputError: an unknown name (the registered ones are listed) or a task that fails to import.
    """
    entry = _registered().get(str(name))
    if entry is None:
        raise InputError(f"unknown task {name!r}; registered tasks: {list_tasks() or 'none'}", field="task")
    try:
        return entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in names itself, not a traceback
        raise InputError(f"task {name!r} failed to load ({entry.value}): {type(exc).__name__}: {exc}",
                         field="task") from exc


def task_from_json(data: Mapping[str, Any]) -> Task:
    """Rebuild a task from its `to_json()`.

    Raises:
        InputError: not a mapping with a `name`, an unknown task, or a description the task refuses.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise InputError("a task description must be a JSON object with a 'name' string", field="task")
    return get_task_class(data["name"]).from_json(data)
