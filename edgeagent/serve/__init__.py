"""`edgeagent serve`: the agent as a local HTTP JSON service (Starlette on uvicorn).

    POST /v1/act          {"text": "..."}              → the ToolCall as JSON
    POST /v1/act/batch    {"texts": [...]} or [...]     → {"results": [ToolCall, ...]}
    GET  /healthz                                       → {"status": "ok", ...}
    GET  /metrics                                       → Prometheus text format

Every error is a JSON body `{"error": {"code": ..., "message": ...}}` with a 4xx status for bad
requests (400 invalid JSON, 404, 405, 413 too large, 422 wrong fields), 503 with Retry-After
when the queue is full or the server is shutting down, and 504 when a request outlives its
timeout. On SIGTERM uvicorn stops accepting, lets requests in flight finish, and then the
queue drains before the model is closed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the service.

    Attributes:
        max_body_bytes: largest request body (default 64 KiB); more gets 413.
        max_batch_items: most utterances in one /v1/act/batch request (default 256).
        max_queue: most utterances waiting or running at once (default 1024); more gets 503.
        max_model_batch: most utterances per model call when the queue forms batches (default 16).
        request_timeout_s: longest a request waits for its answer (default 10 s); then 504.
        retry_after_s: the Retry-After a 503 carries (default 1 s).
        graceful_timeout_s: how long SIGTERM waits for requests in flight (default 30 s).
    """

    max_body_bytes: int = 64 * 1024
    max_batch_items: int = 256
    max_queue: int = 1024
    max_model_batch: int = 16
    request_timeout_s: float = 10.0
    retry_after_s: int = 1
    graceful_timeout_s: int = 30

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_body_bytes", "max_batch_items", "max_model_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}", field=name)
        if self.max_batch_items > self.max_queue:
            raise InputError(f"max_batch_items ({self.max_batch_items}) cannot exceed max_queue "
                             f"({self.max_queue}): such a batch could never be admitted",
                             field="max_batch_items")
        if self.request_timeout_s <= 0:
            raise InputError(f"request_timeout_s must be positive, got {self.request_timeout_s}",
                             field="request_timeout_s")


def create_app(agent: Any, config: ServeConfig | None = None):
    """The ASGI app serving `agent` (anything with act_batch(texts) -> [ToolCall])."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from .batcher import Batcher, QueueFull
    from .metrics import ROUTES, ServeMetrics

    config = config or ServeConfig()
    metrics = ServeMetrics()
    batcher = Batcher(agent, max_queue=config.max_queue, max_batch=config.max_model_batch,
                      on_batch=metrics.observe_batch)
    artifact = getattr(agent, "artifact", None)
    model = {"backend": getattr(artifact, "backend", None), "precision": getattr(artifact, "precision", None),
             "recipe": (artifact.recipe.get("name") if artifact is not None else None),
             "sha256": (artifact.manifest.get("source", {}).get("sha256") if artifact is not None else None)}
    metrics.model_info.labels(*(str(model[k]) for k in ("backend", "precision", "recipe", "sha256"))).set(1)
    state = {"draining": False}

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)

    async def read_json(request: Request) -> Any:
        # Starlette's own max_body_size answers in plain text; the API promises JSON errors.
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise _BadRequest(413, "body_too_large", f"the body is {declared} bytes; the limit is "
                              f"{config.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _BadRequest(413, "body_too_large", f"the body is larger than {config.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise _BadRequest(400, "invalid_json", f"the body is not valid JSON: {exc}") from None

    async def answer(texts: list[str]) -> list[dict[str, Any]]:
        if state["draining"]:
            raise _BadRequest(503, "shutting_down", "the server is shutting down; retry on another instance")
        try:
            futures = batcher.submit(texts)
        except QueueFull as exc:
            metrics.rejected.labels("queue_full").inc()
            raise _BadRequest(503, "queue_full", f"{exc}; retry later") from None
        metrics.queue_depth.set(batcher.depth)
        try:
            waiter = futures[0] if len(futures) == 1 else asyncio.gather(*futures)
            calls = await asyncio.wait_for(waiter, config.request_timeout_s)
            calls = [calls] if len(futures) == 1 else calls
        except TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise _BadRequest(504, "timeout", f"no answer within {config.request_timeout_s} s") from None
        finally:
            metrics.queue_depth.set(batcher.depth)
        return [call.to_json() for call in calls]

    async def act(request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict) or "text" not in payload:
            raise _BadRequest(422, "missing_text", 'the body must be a JSON object with a "text" string, '
                              'e.g. {"text": "..."}')
        if not isinstance(payload["text"], str):
            raise _BadRequest(422, "invalid_text", f'"text" must be a string, got {type(payload["text"]).__name__}')
        return JSONResponse((await answer([payload["text"]]))[0])

    async def act_batch(request: Request) -> Response:
        payload = await read_json(request)
        texts = payload.get("texts") if isinstance(payload, dict) else payload
        if not isinstance(texts, list):
            raise _BadRequest(422, "missing_texts", 'the body must be a JSON list of strings or an object '
                              '{"texts": [...]}')
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise _BadRequest(422, "invalid_text", f"texts[{bad}] must be a string, got {type(texts[bad]).__name__}")
        if len(texts) > config.max_batch_items:
            raise _BadRequest(413, "too_many_texts", f"{len(texts)} texts in one request; the limit is "
                              f"{config.max_batch_items}: split the batch")
        return JSONResponse({"results": await answer(texts) if texts else []})

    async def healthz(request: Request) -> Response:
        status = 503 if state["draining"] else 200
        return JSONResponse({"status": "draining" if state["draining"] else "ok", "model": model,
                             "queue_depth": batcher.depth, "max_model_batch": batcher.max_batch,
                             "batch_invariant": bool(getattr(agent, "batch_invariant", False)),
                             "uptime_s": round(time.time() - metrics.started, 3)}, status_code=status)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = {404: f"no route {request.url.path}; routes: {sorted(ROUTES)}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, codes.get(exc.status_code, "http_error"), message, dict(exc.headers or {}))

    async def bad_request(request: Request, exc: _BadRequest) -> Response:
        headers = {"Retry-After": str(config.retry_after_s)} if exc.status == 503 else None
        return error(exc.status, exc.code, exc.message, headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            state["draining"] = True
            await batcher.stop()  # the agent stays open: whoever made it closes it

    app = Starlette(
        routes=[Route("/v1/act", act, methods=["POST"]), Route("/v1/act/batch", act_batch, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])],
        exception_handlers={HTTPException: http_error, _BadRequest: bad_request, Exception: unexpected},
        lifespan=lifespan)
    return _RequestMetrics(app, metrics)


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _RequestMetrics:
    """ASGI wrapper: counts every response by status and times it, errors from any layer included."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.observe_request(scope["path"], scope["method"], status, time.perf_counter() - start)


def run(agent: Any, *, host: str = "127.0.0.1", port: int = 8080, config: ServeConfig | None = None,
        log_level: str = "info", access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn with uvloop and httptools where installed)."""
    import importlib.util

    import uvicorn

    config = config or ServeConfig()
    uvicorn_config = uvicorn.Config(
        create_app(agent, config), host=host, port=port, lifespan="on", log_level=log_level,
        access_log=access_log, timeout_graceful_shutdown=config.graceful_timeout_s,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler that
    # was there before it; this one turns that into a normal return, so `edgeagent serve` exits 0
    # after a clean stop and the agent is closed.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        uvicorn.Server(uvicorn_config).run()
    except _Stopped:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        close = getattr(agent, "close", None)
        if close is not None:
            close()


class _Stopped(Exception):
    """SIGTERM arrived after uvicorn's graceful shutdown had finished."""


def _raise_stopped(signum, frame) -> None:
    raise _Stopped


__all__ = ["ServeConfig", "create_app", "run"]
