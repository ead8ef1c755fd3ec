"""Where edgeagent keeps what it builds and caches: one answer for every module."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "EDGEAGENT_HOME"


def edgeagent_home() -> Path:
    """`$EDGEAGENT_HOME`, else `$XDG_CACHE_HOME/edgeagent`, else `~/.cache/edgeagent` (not created)."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "edgeagent"
