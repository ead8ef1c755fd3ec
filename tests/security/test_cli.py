"""The CLI (issue 19, defect 11): hostile arguments and files are one line on stderr and exit 1, never
"internal error … a bug in edgeagent" (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeagent.cli.main import main
from tests.security import hostile


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return hostile.tiny_agent_folder(tmp_path_factory.mktemp("agent") / "agent")


def _fails_cleanly(args, capsys, match):
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "internal error" not in err


def test_an_argument_that_is_not_utf8_is_refused(folder, capsys):
    """Python passes non-UTF-8 argv bytes on as lone surrogates, which the tokenizer raised on."""
    _fails_cleanly(["agent", "predict", "turn on \udcff the light", "--artifacts", folder], capsys, "not valid UTF-8")


def test_an_argument_that_is_not_utf8_is_refused_from_a_real_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeagent.cli.main", "run", b"\xffmodel", "--inputs",
                           str(tmp_path / "x.npz")], capture_output=True, timeout=120)
    assert proc.returncode == 1 and b"not valid UTF-8" in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo"])
def test_predict_file_that_is_missing_a_folder_or_a_fifo(folder, tmp_path, capsys, kind):
    import os

    target = tmp_path / "lines.txt"
    if kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    match = {"missing": "does not exist", "folder": "is a folder", "fifo": "not a regular file"}[kind]
    _fails_cleanly(["agent", "predict", "--file", target, "--artifacts", folder], capsys, match)


def test_run_inputs_that_are_a_folder(tmp_path, mlp_path, capsys):
    import edgeagent

    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "art")
    (tmp_path / "in.npz").mkdir()
    _fails_cleanly(["run", artifact.path, "--inputs", tmp_path / "in.npz"], capsys, "is a folder")
