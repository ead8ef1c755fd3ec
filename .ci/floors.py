"""Install the oldest versions pyproject.toml allows for the core dependencies (and the cpu extra's
ONNX Runtime) in a fresh virtual environment, then run the test suite there: the floors are
claims, and this tests them. Tests needing other extras skip themselves.

    python .ci/floors.py [VENV_DIR]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Test tools, at the versions constraints.txt pins (they are not what is being tested).
TOOLS = ("pytest", "pytest-timeout", "pytest-benchmark", "hypothesis", "PyYAML", "httpx")


def floors() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["cpu"]]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*", requirement)
        if not match:
            raise SystemExit(f"core requirement {requirement!r} has no >= floor to test")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def tools() -> list[str]:
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pinned[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    return [pinned.get(t.lower(), t) for t in TOOLS]


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".venv-floors"
    venv.create(target, with_pip=True, clear=True)
    python = str(target / "bin" / "python")
    pins = floors()
    print("floors:", " ".join(pins), flush=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *pins, *tools()], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)], check=True)
    installed = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    for pin in pins:  # pip must not have moved a floor to satisfy another requirement
        if pin.lower() not in installed.lower():
            raise SystemExit(f"{pin} is not what got installed; the floors conflict")
    return subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
