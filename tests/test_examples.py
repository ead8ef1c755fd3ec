"""The scripts in examples/ run as a user runs them, each in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script, expect", [
    ("export_compile_run.py", "top-1 agreement of INT8 with fp32"),
    ("bench_report_compare.py", "classifier[onnxruntime/int8@host]:"),
    ("agent_custom_tool.py", "'play a song' → music"),
])
def test_example_runs(script, expect, tmp_path):
    if script != "export_compile_run.py":
        pytest.importorskip("tokenizers" if script.startswith("agent") else "scipy")
    args = [sys.executable, str(EXAMPLES / script)] + (["--workdir", str(tmp_path)] if "agent" not in script else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout
