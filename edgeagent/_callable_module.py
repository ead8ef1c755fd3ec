"""Let a module double as its main function (`edgeagent.export(...)`, `edgeagent.distill(...)`).

DESIGN.md puts `export` and `distill` in modules of the same name as the public function. Once
Python imports such a submodule it sets the package attribute to the module, hiding the
function; making the module callable keeps both spellings working.
"""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, function_name: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    module.__class__ = _CallableModule
