"""The benchmark harness: cells in their own processes, results files, reports and the gate.

    from edgeagent.bench import BenchConfig, run_bench
    document = run_bench(BenchConfig(["model.onnx"], out="r.json", eval="eval.npz"))
"""

from .budgets import budget_failures, gate
from .config import BenchConfig, BenchProtocol
from .results import SCHEMA, ResultsError, load_results
from .runner import run_bench

__all__ = ["SCHEMA", "BenchConfig", "BenchProtocol", "ResultsError", "budget_failures", "gate", "load_results",
           "run_bench"]
