"""Issue 9's targets: `edgeagent serve` under bounded load, against a bare loop over agent.act.

Side by side, on the same artifact and the ha-intents test sentences:
  1. bare loop: `agent.act(text)` in one Python thread, no HTTP; requests per second.
  2. `edgeagent serve` in its own process; a bounded closed-loop load test (`--requests` POSTs to
     /v1/act from `--concurrency` keep-alive clients, aiohttp; edgeagent.serve.loadgen): status
     counts (target: zero 5xx), p50/p99 latency and requests per second.
  3. where `wrk` is installed (Debian: `apt install wrk`), the same server under wrk with the
     same concurrency for `--duration` s: a C client takes less of the two shared cores than a
     Python one, so its figure is closer to what the server itself can do.
Each is repeated `--repeats` times; the figures are medians. Target: the server's requests per
second at least half the bare loop's (the HTTP layer costs at most half the throughput).
Client and server share this machine's cores; the client's own CPU is part of both figures.

    python benchmarks/serve_throughput.py [--artifacts DIR] [--precision P] [--out results/serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._provenance import provenance  # noqa: E402
from edgeagent.serve.loadgen import run_load  # noqa: E402

COMMAND = "python benchmarks/serve_throughput.py"

# wrk's Lua hooks: cycle through the sentences and count answers by status class.
WRK_SCRIPT = """
local texts = {}
for line in io.lines(os.getenv("EDGEAGENT_WRK_TEXTS")) do texts[#texts + 1] = line end
local i = 0
request = function()
  i = i % #texts + 1
  return wrk.format("POST", "/v1/act", {["Content-Type"] = "application/json"}, texts[i])
end
local counts = {}
response = function(status, headers, body)
  local class = math.floor(status / 100)
  counts[class] = (counts[class] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("edgeagent p50_ms=%.3f p99_ms=%.3f errors=%d\\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_loop(agent, texts: list[str], calls: int) -> float:
    for text in texts[:200]:
        agent.act(text)
    start = time.perf_counter()
    for i in range(calls):
        agent.act(texts[i % len(texts)])
    return calls / (time.perf_counter() - start)


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "edgeagent.cli.main", "serve", "--artifacts", str(args.artifacts),
               "--port", str(port), "--log-level", "warning"]
    for flag in ("backend", "precision"):
        if getattr(args, flag):
            command += [f"--{flag}", getattr(args, flag)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become healthy in 120 s")


def wrk_run(url: str, texts_file: Path, script: Path, concurrency: int, duration: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "-s", str(script), url],
                         capture_output=True, text=True, env={**os.environ, "EDGEAGENT_WRK_TEXTS": str(texts_file)},
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    mine = dict(kv.split("=") for kv in re.search(r"edgeagent (.*)", out).group(1).split())
    return {"requests_per_s": rps, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "p50_ms": float(mine["p50_ms"]), "p99_ms": float(mine["p99_ms"]),
            "socket_errors": int(mine["errors"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, help="agent folder (default: the one `edgeagent demo` builds)")
    parser.add_argument("--backend")
    parser.add_argument("--precision")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, default=Path("results/serve_throughput.json"))
    args = parser.parse_args()

    from edgeagent.agent.demo import agent_folder, build
    from edgeagent.agent.runtime import EdgeAgent
    from edgeagent.workloads import ha_intents

    if args.artifacts is None:
        args.artifacts = agent_folder()
        if not (args.artifacts / "agent.json").is_file():
            build()
    texts = [e.text for e in ha_intents.generate("test")]
    agent = EdgeAgent.load(args.artifacts, backend=args.backend, precision=args.precision)
    artifact = f"{agent.artifact.backend}/{agent.artifact.precision} ({agent.artifact.recipe.get('name')})"
    bare = [bare_loop(agent, texts, args.requests) for _ in range(args.repeats)]
    agent.close()
    print(f"bare loop over agent.act, {artifact}: {statistics.median(bare):.0f} requests/s "
          f"(runs {[round(b) for b in bare]})", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/act"
    server = start_server(args, port)
    results: dict = {"bare_loop_requests_per_s": bare}
    try:
        run_load(url, texts, requests=500, concurrency=args.concurrency)  # warm-up
        loads = [run_load(url, texts, requests=args.requests, concurrency=args.concurrency).summary()
                 for _ in range(args.repeats)]
        results["load_test"] = loads
        for load in loads:
            print(f"load test {args.requests} requests, {args.concurrency} concurrent (aiohttp): "
                  f"{load['requests_per_s']:.0f} requests/s, p50 {load['latency_ms']['p50']:.2f} ms, "
                  f"p99 {load['latency_ms']['p99']:.2f} ms, statuses {load['statuses']}, "
                  f"transport errors {load['transport_errors']}", flush=True)
        if shutil.which("wrk"):
            with tempfile.TemporaryDirectory() as tmp:
                texts_file, script = Path(tmp) / "texts.jsonl", Path(tmp) / "act.lua"
                texts_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
                script.write_text(WRK_SCRIPT)
                wrks = [wrk_run(url, texts_file, script, args.concurrency, args.duration) for _ in range(args.repeats)]
            results["wrk"] = wrks
            for run in wrks:
                print(f"wrk -c{args.concurrency} -d{args.duration}s: {run['requests_per_s']:.0f} requests/s, "
                      f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, non-2xx {run['non_2xx']}, "
                      f"socket errors {run['socket_errors']}", flush=True)
        else:
            print("wrk is not installed (apt install wrk): only the aiohttp client's figure", flush=True)
    finally:
        server.terminate()
        server.wait(60)

    bare_rps = statistics.median(bare)
    summary = {"artifact": artifact, "bare_loop_requests_per_s": round(bare_rps, 1),
               "load_test_requests_per_s": round(statistics.median(l["requests_per_s"] for l in results["load_test"]), 1),
               "load_test_server_errors": sum(l["server_errors"] for l in results["load_test"]),
               "load_test_p50_ms": round(statistics.median(l["latency_ms"]["p50"] for l in results["load_test"]), 3),
               "load_test_p99_ms": round(statistics.median(l["latency_ms"]["p99"] for l in results["load_test"]), 3)}
    summary["ratio_aiohttp_client"] = round(summary["load_test_requests_per_s"] / bare_rps, 3)
    if "wrk" in results:
        summary["wrk_requests_per_s"] = round(statistics.median(w["requests_per_s"] for w in results["wrk"]), 1)
        summary["wrk_non_2xx"] = sum(w["non_2xx"] for w in results["wrk"])
        summary["ratio_wrk_client"] = round(summary["wrk_requests_per_s"] / bare_rps, 3)
    best = summary.get("ratio_wrk_client", summary["ratio_aiohttp_client"])
    summary["target_half_of_bare_loop"] = "met" if best >= 0.5 else "NOT met"
    summary["target_zero_5xx"] = "met" if summary["load_test_server_errors"] == 0 else "NOT met"
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": results, "command": COMMAND,
                                    "settings": {k: str(v) for k, v in vars(args).items()},
                                    "provenance": provenance()}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
