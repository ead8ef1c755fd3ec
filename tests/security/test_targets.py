"""Target files (issue 19, defects 8, 11, 12 and 13): every field typed and bounded when the file is
read, naming file and field; files that are not plain TOML are refused without hanging."""

from __future__ import annotations

import os
import threading

import pytest

from edgeagent.cli.main import main
from edgeagent.errors import InputError
from edgeagent.targets import TARGETS_PATH_ENV, TargetError, load_target_file

BASE = """
name = "board"
description = "a board"
architecture = "aarch64"
cores = {cores}
threads = {threads}
memory = "{memory}"
memory_limit = "{limit}"
runs_on = ["self-hosted"]
[[backends]]
name = "onnxruntime"
options = {{ {options} }}
[budgets]
{budgets}
"""


def _profile(tmp_path, **changes):
    fields = {"cores": 2, "threads": 2, "memory": "1GiB", "limit": "512MiB", "options": "",
              "budgets": "p90_latency_ms = 5.0", **changes}
    path = tmp_path / "board.toml"
    path.write_text(BASE.format(**fields))
    return path


def test_the_base_profile_is_valid(tmp_path):
    assert load_target_file(_profile(tmp_path)).threads == 2


@pytest.mark.parametrize("changes, field", [
    ({"memory": "9223372036854775807", "limit": "9223372036854775000"}, "memory"),  # killed bench in preexec_fn
    ({"memory": "2000000TiB"}, "memory"),
    ({"cores": 100_000, "threads": 400_000}, "cores"),  # segfaulted ONNX Runtime
    ({"cores": 1024, "threads": 4000}, "threads"),
    ({"options": "nodes_to_exclude = 5"}, "nodes_to_exclude"),  # failed later with a TypeError
    ({"options": "threads = 400000"}, "threads"),
    ({"options": "per_channel = 3"}, "per_channel"),
    ({"options": "calibration_size = 1.5"}, "calibration_size"),
    ({"budgets": "p90_latency_ms = nan"}, "p90_latency_ms"),
    ({"budgets": "p90_latency_ms = inf"}, "p90_latency_ms"),
    ({"budgets": "p90_latency_ms = 0"}, "p90_latency_ms"),
    ({"budgets": "min_accuracy = nan"}, "min_accuracy"),
    ({"budgets": "min_accuracy = 0"}, "min_accuracy"),
    ({"budgets": "max_accuracy_drop = -inf"}, "max_accuracy_drop"),
])
def test_out_of_range_or_mistyped_fields_are_refused_with_file_and_field(tmp_path, changes, field):
    path = _profile(tmp_path, **changes)
    with pytest.raises(TargetError) as info:
        load_target_file(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_ort_refuses_absurd_thread_counts_from_any_caller():
    from edgeagent.backends.onnxruntime import OrtLoadOptions

    with pytest.raises(InputError, match="between 1 and 1024"):
        OrtLoadOptions(threads=400_000)


def _show_returns_within(args, seconds=10.0):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{args} hung"
    return result["code"]


def test_targets_show_dev_zero_is_refused(capsys):
    """Defect 11: `targets show /dev/zero` read until memory ran out."""
    assert _show_returns_within(["targets", "show", "/dev/zero"]) == 1
    assert "not a regular file" in capsys.readouterr().err


def test_targets_show_a_fifo_does_not_hang(tmp_path, capsys):
    """Defect 12: a FIFO as a target file hung `targets show`."""
    fifo = tmp_path / "board.toml"
    os.mkfifo(fifo)
    assert _show_returns_within(["targets", "show", str(fifo)]) == 1
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("text, match", [
    ("a = " + "[" * 100_000 + "]" * 100_000, "too deep"),
    ("a = " + "9" * 5000, "cannot be read"),
    ("\xff\xfe", "UTF-8"),
])
def test_hostile_toml_is_a_target_error(tmp_path, text, match, capsys):
    path = tmp_path / "board.toml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(TargetError, match=match):
        load_target_file(path)
    assert main(["targets", "show", str(path)]) == 1


def test_one_broken_file_on_the_targets_path_does_not_hide_the_built_ins(tmp_path, monkeypatch, capsys):
    """Defect 13: one broken TOML file on EDGEAGENT_TARGETS_PATH broke `targets show rpi5`."""
    (tmp_path / "broken.toml").write_text("name = [unclosed")
    monkeypatch.setenv(TARGETS_PATH_ENV, str(tmp_path))
    assert main(["targets", "show", "rpi5"]) == 0
    assert main(["targets", "list"]) == 0
    assert "broken.toml" in capsys.readouterr().err
    assert main(["targets", "show", "nope"]) == 1
    assert "broken.toml" in capsys.readouterr().err  # the unknown name mentions what was skipped
