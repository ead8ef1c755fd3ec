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


def _import_graph() -> dict[str, set[str]]:
    """Package → the packages it imports, from every `import` in the source (inside functions
    too, where optional SDKs are imported; `if TYPE_CHECKING:` blocks excepted)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = {"edgeagent": root / "edgeagent", "edgeagent.backends": root / "backends",
               "edgeagent.targets": root / "targets"}

    def node(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "edgeagent" and len(parts) > 1 else None

    graph: dict[str, set[str]] = {}
    for package, folder in sources.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            module = ".".join([package, *parts])
            is_package = path.name == "__init__.py"
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skipped = {id(n) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(stmt.test) for n in ast.walk(stmt)}
            here = node(module)
            for item in ast.walk(tree):
                if id(item) in skipped:
                    continue
                targets = []
                if isinstance(item, ast.Import):
                    targets = [a.name for a in item.names]
                elif isinstance(item, ast.ImportFrom):
                    if item.level:
                        base = module.split(".") if is_package else module.split(".")[:-1]
                        base = base[:len(base) - item.level + 1]
                        prefix = ".".join(base + ([item.module] if item.module else []))
                    else:
                        prefix = item.module or ""
                    targets = [prefix] + [f"{prefix}.{a.name}" for a in item.names]
                for target in targets:
                    other = node(target)
                    if here and other and other != here and other in _known_nodes(sources):
                        graph.setdefault(here, set()).add(other)
    return graph


def _known_nodes(sources) -> set[str]:
    names = set()
    for package, folder in sources.items():
        if package != "edgeagent":
            names.add(package)
            continue
        for path in folder.iterdir():
            if path.suffix == ".py" and path.stem != "__init__":
                names.add(f"edgeagent.{path.stem}")
            elif path.is_dir() and (path / "__init__.py").is_file():
                names.add(f"edgeagent.{path.name}")
    return names


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for other in sorted(graph.get(name, ())):
            if state.get(other) == 1:
                return stack[stack.index(other):] + [other]
            if other not in state and (found := visit(other)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = _import_graph()
    assert "edgeagent.tasks" in graph and "edgeagent.agent" in graph  # the walk found the imports
    assert "edgeagent.tasks" in graph["edgeagent.agent"]
    assert _cycle(graph) is None, f"import cycle: {' → '.join(_cycle(graph))}"
    # The layering the redesign promises: tasks know no workload, agent, bench, serve or CLI.
    assert not graph["edgeagent.tasks"] & {"edgeagent.workloads", "edgeagent.agent", "edgeagent.bench",
                                           "edgeagent.serve", "edgeagent.cli", "edgeagent.distill"}


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
