"""edgeagent.Dataset: streaming, re-iteration, subsets and .npz files."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent import Dataset
from edgeagent.data import NpzArrays
from edgeagent.errors import InputError


def _items(n):
    return [{"x": np.full((1, 2), i, np.float32)} for i in range(n)]


def test_list_source_is_reiterable_and_sized():
    data = Dataset(_items(5))
    assert len(data) == 5
    assert [int(d["x"][0, 0]) for d in data] == [0, 1, 2, 3, 4]
    assert [int(d["x"][0, 0]) for d in data] == [0, 1, 2, 3, 4]


def test_one_shot_iterator_says_so_on_second_read():
    data = Dataset(iter(_items(3)))
    assert len(list(data)) == 3
    with pytest.raises(InputError, match="one-shot"):
        list(data)


def test_factory_restarts():
    data = Dataset.from_factory(lambda: (item for item in _items(4)))
    assert len(list(data)) == len(list(data)) == 4


def test_transform_builds_feeds():
    data = Dataset(range(3), transform=lambda i: {"x": np.array([[i]], np.int64)})
    assert [d["x"].item() for d in data] == [0, 1, 2]


def test_non_dict_items_are_refused():
    with pytest.raises(InputError, match="transform"):
        list(Dataset([1, 2]))
    with pytest.raises(InputError, match="iterable"):
        Dataset({"x": np.zeros(1)})


def test_subset_is_deterministic_bounded_and_ordered():
    consumed = []

    def stream():
        for i in range(1000):
            consumed.append(i)
            yield {"x": np.array([i])}

    data = Dataset.from_factory(stream)
    a = [int(d["x"][0]) for d in data.subset(10, seed=1)]
    b = [int(d["x"][0]) for d in data.subset(10, seed=1)]
    c = [int(d["x"][0]) for d in data.subset(10, seed=2)]
    assert a == b and a != c
    assert len(a) == 10 and a == sorted(a) and len(set(a)) == 10
    assert max(a) > 100, "reservoir sampling reaches beyond the first items"
    assert [int(d["x"][0, 0]) for d in Dataset(_items(3)).subset(10)] == [0, 1, 2]


def test_subset_rejects_non_positive():
    with pytest.raises(InputError):
        Dataset(_items(2)).subset(0)


def test_from_npz_streams_samples(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(10, dtype=np.float32).reshape(5, 2), labels=np.arange(5))
    data = Dataset.from_npz(path)
    items = list(data)
    assert len(items) == len(data) == 5 and set(items[0]) == {"x"}
    assert items[2]["x"].shape == (1, 2)
    assert len(list(Dataset.from_npz(path, batch_size=2))) == 3
    assert NpzArrays(path).labels.tolist() == [0, 1, 2, 3, 4]


def test_npz_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Dataset.from_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)), y=np.zeros((4, 2)))
    with pytest.raises(InputError, match="first"):
        Dataset.from_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)))
    with pytest.raises(InputError, match="input_ids"):
        Dataset.from_npz(tmp_path / "b.npz", input_names=["input_ids"])
    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="npz"):
        Dataset.from_npz(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="npz"):
        Dataset.from_npz(tmp_path / "d.npz")
