"""Options for the pytest-benchmark suite: which model and eval data the cells use."""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("edgeagent")
    group.addoption("--edgeagent-model", default=None,
                    help="ONNX model to benchmark (default: the test suite's small classifier)")
    group.addoption("--edgeagent-eval", default=None,
                    help=".npz with one array per input and `labels` (default: blobs for the classifier)")
    group.addoption("--edgeagent-backends", default=None, help="comma-separated (default: all available)")
