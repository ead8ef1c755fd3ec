"""Every edgeagent module imports with torch, transformers, openvino, nncf, tensorrt and the serving stack absent.

Like Polygraphy's tests/mod/test_dependencies.py: a fresh interpreter whose import system
refuses those packages imports each module and lists the backends.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap

BLOCKED = ["torch", "transformers", "openvino", "nncf", "tensorrt", "cuda", "tokenizers", "safetensors", "matplotlib",
           "starlette", "uvicorn", "prometheus_client", "aiohttp", "httpx"]


def _modules() -> list[str]:
    import edgeagent
    import edgeagent.backends
    import edgeagent.targets

    names = ["edgeagent", "edgeagent.backends", "edgeagent.targets"]
    # backends/ is mapped into the package (package-dir), so walk it on its own path too.
    for package, prefix in ((edgeagent, "edgeagent."), (edgeagent.backends, "edgeagent.backends.")):
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix)]
    return sorted(set(names))


def test_all_modules_import_without_optional_sdks():
    modules = _modules()
    assert "edgeagent.backends.onnxruntime" in modules and "edgeagent.cli.main" in modules
    assert "edgeagent.bench.worker" in modules and "edgeagent.workloads" in modules
    script = textwrap.dedent(f'''
        import importlib, importlib.abc, json, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked for this test")
                return None
        sys.meta_path.insert(0, Block())
        for name in {modules!r}:
            importlib.import_module(name)
        import edgeagent
        rows = edgeagent.list_backends()
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"rows": rows, "leaked": leaked}}))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["onnxruntime"]["available"] is True
    assert rows["openvino"]["available"] is False and "openvino" in rows["openvino"]["reason"]
    assert rows["tensorrt"]["available"] is False


def test_import_edgeagent_is_light():
    proc = subprocess.run([sys.executable, "-c", "import sys, edgeagent; print(sorted(m for m in "
                           "('torch','onnxruntime','openvino','onnx') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"
