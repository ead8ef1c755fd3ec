"""mkdocs hook: lay the sources out as the installed package is, for the API reference.

`backends/` and `targets/` install as `edgeagent.backends` and `edgeagent.targets`
(pyproject's package-dir), a layout griffe cannot see in the clone. On startup this builds
`.docs-src/edgeagent/`, a tree of symlinks to the real files with those two folders in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / ".docs-src" / "edgeagent"


def on_startup(**_) -> None:
    shutil.rmtree(TREE.parent, ignore_errors=True)
    TREE.mkdir(parents=True)
    for entry in (ROOT / "edgeagent").iterdir():
        if entry.name != "__pycache__":
            (TREE / entry.name).symlink_to(entry)
    (TREE / "backends").symlink_to(ROOT / "backends")
    (TREE / "targets").symlink_to(ROOT / "targets")
