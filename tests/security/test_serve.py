"""The HTTP server (issue 19, defects 2, 3, 9 and 10) under hostile requests, on a tiny agent built in
code: one client's bad text never fails another's request, errors keep connections usable, slow
senders are cut off, disconnects are counted apart. Real sockets go to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from edgeagent.agent.runtime import EdgeAgent  # noqa: E402
from edgeagent.cli.main import main  # noqa: E402
from edgeagent.serve import ServeConfig, create_app  # noqa: E402
from tests.security import hostile  # noqa: E402

POISON = "poison pill"  # the utterance the wrapped model fails on
GOOD = {"turn on the light": "HassTurnOn", "set the light to 50%": "HassLightSet", "turn off": "not_understood",
        "打开灯": "not_understood", "\x1b[31mturn on the light": "HassTurnOn"}


class Agent:
    """The tiny agent, slowed a little so concurrent requests share micro-batches, and failing on POISON
    as a model fails on an input it cannot take."""

    def __init__(self, agent: EdgeAgent, delay_s: float = 0.0) -> None:
        self.agent, self.delay_s = agent, delay_s
        self.artifact, self.batch_invariant = agent.artifact, agent.batch_invariant
        self.batches: list[int] = []

    def act_batch(self, texts):
        time.sleep(self.delay_s)
        self.batches.append(len(texts))
        if POISON in texts:
            raise RuntimeError("the model failed on this input")
        return self.agent.act_batch(texts)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return EdgeAgent.load(hostile.tiny_agent_folder(tmp_path_factory.mktemp("agent") / "agent"))


@contextlib.contextmanager
def live_server(agent, config: ServeConfig | None = None):
    """uvicorn on 127.0.0.1 in a thread, with the limits `edgeagent serve` gives it."""
    from edgeagent.serve import uvicorn_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(agent, host="127.0.0.1", port=port, config=config or ServeConfig(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _request(path: str, body: bytes, *, length: int | None = None) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body; (0, {}, b"") when the server closed instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_good_requests_all_get_200_among_hostile_ones_in_shared_batches(tiny):
    """Defect 3: one lone surrogate failed every utterance of its micro-batch (65 of 200 good requests)."""
    agent = Agent(tiny, delay_s=0.005)
    hostile_bodies = [(b'{"text": "\\ud800"}', 422), (b'{"text": "turn on \\udcff"}', 422),
                      (b'{"text": ' + hostile.huge_int().encode() + b"}", 400),
                      (hostile.deep_json(20_000).encode(), 400), (b'{"text": "x", "n": 1e999}', 400),
                      (b'{"text": 5}', 422), (b"{not json", 400), (json.dumps({"text": POISON}).encode(), 500)]
    good = list(GOOD) * 40

    async def traffic(port):
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as http:
            jobs = []  # (expected status, expected intent or None, request)
            for i, text in enumerate(good):
                jobs.append((200, GOOD[text], http.post("/v1/act", json={"text": text})))
                if i % 10 == 0:
                    body, status = hostile_bodies[(i // 10) % len(hostile_bodies)]
                    jobs.append((status, None, http.post("/v1/act", content=body)))
            jobs.append((500, None, http.post("/v1/act/batch", json=["turn on the light", POISON])))
            responses = await asyncio.gather(*(request for _, _, request in jobs))
            return [(status, intent, response) for (status, intent, _), response in zip(jobs, responses)]

    with live_server(agent, ServeConfig(max_model_batch=16)) as port:
        results = asyncio.run(traffic(port))
    assert sum(1 for _, intent, _ in results if intent) == len(good)
    for status, intent, response in results:
        assert response.status_code == status, (response.request.content[:60], response.text[:200])
        if intent:
            assert response.json()["intent"] == intent
        elif status != 200:
            assert response.json()["error"]["code"]
    assert max(agent.batches) > 1, "the good and hostile requests never shared a batch"


def test_a_500_keeps_the_connection_usable(tiny):
    """Defect 9: 500s closed the socket without Connection: close, so the next keep-alive request failed."""
    with live_server(Agent(tiny)) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("/v1/act", json.dumps({"text": POISON}).encode()))
        status, headers, body = _read_response(sock)
        assert status == 500 and json.loads(body)["error"]["code"] == "internal_error"
        assert headers.get("connection") != "close"
        sock.sendall(_request("/v1/act", json.dumps({"text": "turn on the light"}).encode()))
        status, _, body = _read_response(sock)
        assert status == 200 and json.loads(body)["intent"] == "HassTurnOn"


def test_a_client_that_disconnects_mid_body_is_counted_apart_and_logged_once(tiny, caplog):
    """Defect 9: disconnects were counted as status="500", each with a traceback."""
    with caplog.at_level(logging.INFO), live_server(Agent(tiny)) as port:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(_request("/v1/act", b'{"text": "turn', length=100))
        time.sleep(0.5)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "edgeagent_client_disconnects_total 3.0" in metrics
    assert 'status="disconnected"' in metrics and 'status="500"' not in metrics
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 3 and all(r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


def test_slow_bodies_are_cut_off_by_the_body_timeout(tiny):
    """Defect 10: 50 connections sending one byte every 2 s stayed open past 40 s."""
    config = ServeConfig(body_timeout_s=0.5)
    with live_server(Agent(tiny), config) as port:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            start = time.monotonic()
            for sock in socks:
                sock.sendall(_request("/v1/act", b"{", length=50))
            for sock in socks:
                status, headers, body = _read_response(sock)
                assert status == 408 and headers.get("connection") == "close"
                assert json.loads(body)["error"]["code"] == "body_timeout"
                assert sock.recv(1) == b""  # and the server closed it
            assert time.monotonic() - start < 5
        finally:
            for sock in socks:
                sock.close()
        assert httpx.post(f"http://127.0.0.1:{port}/v1/act", json={"text": "turn on the light"}).status_code == 200


def test_connections_beyond_the_cap_get_503(tiny):
    """Defect 10: no cap on concurrent connections."""
    config = ServeConfig(max_connections=2, body_timeout_s=5)
    with live_server(Agent(tiny), config) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(_request("/v1/act", b"{", length=50))  # two requests in progress
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                extra.sendall(_request("/v1/act", json.dumps({"text": "turn on the light"}).encode()))
                status, _, _ = _read_response(extra)
            assert status == 503
        finally:
            for sock in held:
                sock.close()


@pytest.mark.parametrize("body, status, code", [
    (b'{"text": "\\ud800"}', 422, "invalid_text"),
    (b'["ok", "fine", "\\udfff"]', 422, "invalid_text"),
    (b'{"text": ' + b"1" * 5000 + b"}", 400, "invalid_json"),
    (b'{"text": "x", "pad": ' + hostile.deep_json(100).encode() + b"}", 400, "invalid_json"),
])
def test_unreadable_bodies_are_4xx_with_what_is_wrong(tiny, body, status, code):
    with TestClient(create_app(Agent(tiny))) as client:
        path = "/v1/act/batch" if body.startswith(b"[") else "/v1/act"
        response = client.post(path, content=body)
        assert response.status_code == status and response.json()["error"]["code"] == code
        if body.startswith(b"["):
            assert "texts[2]" in response.json()["error"]["message"]


def test_healthz_says_failing_when_every_request_fails(tiny):
    """Defect 2: serve answered 500 to every /v1/act while /healthz said ok."""
    class Broken(Agent):
        def act_batch(self, texts):
            raise RuntimeError("IndexError in every call")

    with TestClient(create_app(Broken(tiny))) as client:
        for _ in range(3):
            assert client.post("/v1/act", json={"text": "turn on the light"}).status_code == 500
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failing"
    with TestClient(create_app(Agent(tiny))) as client:  # one client's failing inputs do not fail the server
        for _ in range(5):
            assert client.post("/v1/act", json={"text": POISON}).status_code == 500
        assert client.get("/healthz").json()["status"] == "ok"


def test_the_limits_are_serve_flags(tmp_path, capsys):
    assert main(["serve", "--artifacts", str(tmp_path), "--body-timeout", "0"]) == 1
    assert "body_timeout_s" in capsys.readouterr().err
    assert main(["serve", "--artifacts", str(tmp_path), "--max-connections", "0"]) == 1
    assert "max_connections" in capsys.readouterr().err
