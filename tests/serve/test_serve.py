"""`edgeagent serve`: the HTTP API on a real agent, its errors, limits, metrics and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from edgeagent.agent.runtime import NOT_UNDERSTOOD, EdgeAgent  # noqa: E402
from edgeagent.cli.main import main  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402
from edgeagent.serve import ServeConfig, create_app  # noqa: E402
from edgeagent.serve.loadgen import run_load  # noqa: E402

pytestmark = pytest.mark.torch  # the agent under test is trained with torch


class SlowAgent:
    """The real agent, with a pause before each model call: makes queueing and timeouts observable."""

    def __init__(self, agent: EdgeAgent, delay_s: float) -> None:
        self.agent, self.delay_s = agent, delay_s
        self.artifact, self.batch_invariant = agent.artifact, agent.batch_invariant

    def act_batch(self, texts):
        time.sleep(self.delay_s)
        return self.agent.act_batch(texts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(agent, config: ServeConfig | None = None):
    """uvicorn on a real socket in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(agent, config), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def agent(agent_dir):
    return EdgeAgent.load(agent_dir)


@pytest.fixture(scope="module")
def client(agent):
    with TestClient(create_app(agent)) as c:
        yield c


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


def test_act_and_batch_answer_as_the_agent_does(client, agent):
    text = "turn off the kitchen light"
    response = client.post("/v1/act", json={"text": text})
    assert response.status_code == 200
    body, direct = response.json(), agent.act(text)
    assert (body["text"], body["intent"], body["slots"]) == (text, direct.intent, direct.slots)
    assert body["confidence"] == pytest.approx(direct.confidence, abs=1e-6)
    texts = [text, "", "set the desk lamp to 40%"]
    for payload in (texts, {"texts": texts}):
        results = client.post("/v1/act/batch", json=payload).json()["results"]
        assert [r["intent"] for r in results] == [agent.act(t).intent for t in texts]
        assert results[1]["intent"] == NOT_UNDERSTOOD
    assert client.post("/v1/act/batch", json=[]).json() == {"results": []}
    long = client.post("/v1/act", json={"text": "turn on the lights " * 200}).json()
    assert long["truncated"] is True
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"]["backend"] == "onnxruntime"


def test_metrics_count_requests_confidence_and_not_understood(agent):
    with TestClient(create_app(agent)) as c:
        for _ in range(3):
            c.post("/v1/act", json={"text": "turn on the light"})
        c.post("/v1/act", json={"text": "   "})
        c.post("/v1/act", content=b"{")
        c.get("/nowhere")
        text = c.get("/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("edgeagent_http_requests_total", (("method", "POST"), ("path", "/v1/act"), ("status", "200")))] == 4
    assert samples[("edgeagent_http_requests_total", (("method", "POST"), ("path", "/v1/act"), ("status", "400")))] == 1
    assert samples[("edgeagent_http_requests_total", (("method", "GET"), ("path", "other"), ("status", "404")))] == 1
    assert samples[("edgeagent_answer_confidence_count", ())] == 4
    assert samples[("edgeagent_utterances_total", (("outcome", "not_understood"),))] >= 1
    assert 0.2 <= samples[("edgeagent_not_understood_ratio", ())] <= 1.0
    assert samples[("process_resident_memory_bytes", ())] > 10 << 20
    assert samples[("edgeagent_http_request_duration_seconds_count", (("path", "/v1/act"),))] == 5
    assert samples[("edgeagent_model_latency_seconds_count", ())] >= 1


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("POST", "/v1/act", {"content": b"{not json"}, 400, "invalid_json"),
    ("POST", "/v1/act", {"content": b"\xff\xfe\x00"}, 400, "invalid_json"),
    ("POST", "/v1/act", {"content": b""}, 400, "invalid_json"),
    ("POST", "/v1/act", {"json": ["a list"]}, 422, "missing_text"),
    ("POST", "/v1/act", {"json": {"txt": "hi"}}, 422, "missing_text"),
    ("POST", "/v1/act", {"json": {"text": 42}}, 422, "invalid_text"),
    ("POST", "/v1/act", {"json": {"text": None}}, 422, "invalid_text"),
    ("POST", "/v1/act/batch", {"json": {"texts": "one"}}, 422, "missing_texts"),
    ("POST", "/v1/act/batch", {"json": ["ok", 3]}, 422, "invalid_text"),
    ("POST", "/v1/act/batch", {"json": ["x"] * 257}, 413, "too_many_texts"),
    ("POST", "/v1/act", {"json": {"text": "x" * 70_000}}, 413, "body_too_large"),
    ("GET", "/v1/act", {}, 405, "method_not_allowed"),
    ("DELETE", "/healthz", {}, 405, "method_not_allowed"),
    ("GET", "/v2/act", {}, 404, "not_found"),
])
def test_bad_requests_get_a_json_4xx(client, method, path, kwargs, status, code):
    response = client.request(method, path, **kwargs)
    assert response.status_code == status and error_code(response) == code
    assert client.post("/v1/act", json={"text": "turn on the light"}).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused(agent):
    def chunks():
        for _ in range(10):
            yield b"x" * 1024

    with TestClient(create_app(agent, ServeConfig(max_body_bytes=4096, max_batch_items=8))) as c:
        response = c.post("/v1/act", content=chunks())
        assert response.status_code == 413 and error_code(response) == "body_too_large"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.sampled_from(["/v1/act", "/v1/act/batch", "/healthz", "/metrics", "/", "/v1/act/x"]),
       body=st.one_of(st.binary(max_size=256), json_values.map(lambda v: json.dumps(v).encode()),
                      st.dictionaries(st.sampled_from(["text", "texts"]), json_values, max_size=2)
                      .map(lambda v: json.dumps(v).encode())))
def test_malformed_requests_never_break_the_server(client, method, path, body):
    response = client.request(method, path, content=body)
    assert response.status_code < 500
    if response.status_code >= 400:
        error_code(response)


def test_after_thousands_of_malformed_requests_a_valid_one_is_answered(client, agent):
    # Runs after the property test above in this module's shared client.
    text = "turn off the kitchen light"
    assert client.post("/v1/act", json={"text": text}).json()["intent"] == agent.act(text).intent


def test_a_full_queue_answers_503_with_retry_after(agent):
    config = ServeConfig(max_queue=2, max_batch_items=2, max_model_batch=1)

    async def burst(url):
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(*(http.post(f"{url}/v1/act", json={"text": "turn on the light"})
                                          for _ in range(8)))

    with live_server(SlowAgent(agent, 0.2), config) as url:
        responses = asyncio.run(burst(url))
        assert httpx.post(f"{url}/v1/act", json={"text": "turn on the light"}, timeout=30).status_code == 200
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and set(statuses) == {200, 503}
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1" and error_code(rejected) == "queue_full"


def test_a_request_past_its_timeout_gets_504_and_a_client_that_leaves_breaks_nothing(agent):
    config = ServeConfig(request_timeout_s=0.1)
    with live_server(SlowAgent(agent, 0.4), config) as url:
        response = httpx.post(f"{url}/v1/act", json={"text": "turn on the light"}, timeout=30)
        assert response.status_code == 504 and error_code(response) == "timeout"
        with pytest.raises(httpx.ReadTimeout):  # the client hangs up while its utterance is queued
            httpx.post(f"{url}/v1/act", json={"text": "turn on the light"}, timeout=0.05)
        time.sleep(0.5)
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "ok" and health["queue_depth"] == 0
    with live_server(SlowAgent(agent, 0.05), ServeConfig(request_timeout_s=5)) as url:
        assert httpx.post(f"{url}/v1/act", json={"text": "turn on the light"}).status_code == 200


def test_bounded_load_has_no_server_errors(agent):
    texts = ["turn off the kitchen light", "set the desk lamp to 40%", "what is the temperature", ""]
    with live_server(agent) as url:
        result = run_load(f"{url}/v1/act", texts, requests=2000, concurrency=16)
        metrics = httpx.get(f"{url}/metrics").text
    assert result.statuses == {200: 2000} and not result.errors
    summary = result.summary()
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"] and summary["requests_per_s"] > 0
    assert 'edgeagent_http_requests_total{method="POST",path="/v1/act",status="200"} 2000.0' in metrics


SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from edgeagent.agent.runtime import EdgeAgent
    from edgeagent.serve import ServeConfig, run

    agent = EdgeAgent.load(sys.argv[1])
    real = agent.act_batch
    agent.act_batch = lambda texts: (time.sleep(float(sys.argv[3])), real(texts))[1]
    print("ready", flush=True)
    run(agent, port=int(sys.argv[2]), config=ServeConfig(max_model_batch=1), log_level="warning")
""")


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_sigterm_finishes_requests_in_flight(agent_dir, tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, str(script), str(agent_dir), str(port), "0.3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        wait_healthy(url, process)

        async def in_flight():
            async with httpx.AsyncClient(timeout=30) as http:
                tasks = [asyncio.create_task(http.post(f"{url}/v1/act", json={"text": "turn on the light"}))
                         for _ in range(4)]
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # until all four are in: one in the model, three queued
                    health = (await http.get(f"{url}/healthz")).json()
                    if health["queue_depth"] == 4:
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        responses = asyncio.run(in_flight())
        assert [r.status_code for r in responses] == [200] * 4
        assert all(r.json()["intent"] for r in responses)
        assert process.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_the_serve_command_starts_answers_and_stops(agent_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "edgeagent.cli.main", "serve", "--artifacts", str(agent_dir),
                                "--precision", "fp32", "--port", str(port), "--log-level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, process)
        assert httpx.get(f"{url}/healthz").json()["model"]["precision"] == "fp32"
        assert httpx.post(f"{url}/v1/act", json={"text": "turn on the light"}).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate()
    assert f"on http://127.0.0.1:{port}" in err


def test_serve_refuses_bad_arguments(agent_dir, tmp_path, capsys):
    assert main(["serve", "--artifacts", str(tmp_path)]) == 1
    assert "agent folder" in capsys.readouterr().err
    assert main(["serve", "--artifacts", str(agent_dir), "--port", "70000"]) == 1
    assert "not a TCP port" in capsys.readouterr().err
    assert main(["serve", "--artifacts", str(agent_dir), "--max-queue", "0"]) == 1
    assert "max_queue" in capsys.readouterr().err
    with pytest.raises(InputError, match="max_batch_items"):
        ServeConfig(max_queue=4, max_batch_items=8)


def test_the_systemd_unit_runs_a_valid_serve_command():
    import configparser
    import shlex
    import shutil
    from pathlib import Path

    from edgeagent.cli.main import build_parser

    unit = Path(__file__).resolve().parents[2] / "deploy" / "edgeagent.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(unit.read_text().replace("\\\n", " "))
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert Path(argv[0]).name == "edgeagent"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.host == "127.0.0.1"
    assert int(parser["Service"]["TimeoutStopSec"]) > args.graceful_timeout
    if shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        # The only complaint allowed is the install path, which does not exist on a build machine.
        problems = [line for line in result.stderr.splitlines() if line.strip() and "is not executable" not in line]
        assert not problems, problems


def test_a_request_context_fills_the_area_as_act_does(agent):
    pytest.importorskip("rapidfuzz")
    from edgeagent.agent.home import SIMULATED_HOME

    homed = EdgeAgent.load(agent.artifact.path.parent, precision=agent.artifact.precision, home=SIMULATED_HOME)
    with TestClient(create_app(homed)) as client:
        text, context = "turn on the light", {"area": "lounge"}
        body = client.post("/v1/act", json={"text": text, "context": context}).json()
        direct = homed.act(text, context)
        assert (body["intent"], body["slots"], body["context"]) == (direct.intent, direct.slots, direct.context)
        batch = client.post("/v1/act/batch", json={"texts": [text, text], "contexts": [context, None]}).json()
        assert [r["context"] for r in batch["results"]] == [direct.context, homed.act(text).context]
        shared = client.post("/v1/act/batch", json={"texts": [text], "context": context}).json()
        assert shared["results"][0]["slots"] == direct.slots
        for payload, path in (({"text": text, "context": {"area": "attic"}}, "/v1/act"),
                              ({"text": text, "context": "kitchen"}, "/v1/act"),
                              ({"texts": [text], "contexts": [context, context]}, "/v1/act/batch"),
                              ({"texts": [text], "contexts": [context], "context": context}, "/v1/act/batch")):
            response = client.post(path, json=payload)
            assert response.status_code == 422 and error_code(response) == "invalid_context"
        assert client.post("/v1/act", json={"text": text}).status_code == 200  # still serving
