"""`edgeagent serve [--artifacts DIR] [--backend B] [--precision P] [--host H] [--port N] [limits]`."""

from __future__ import annotations

import importlib.util
import sys


def register(sub) -> None:
    from ..serve import ServeConfig

    defaults = ServeConfig()
    serve = sub.add_parser("serve", help="serve the agent over HTTP: POST /v1/act, /v1/act/batch, "
                           "GET /healthz, /metrics")
    serve.add_argument("--artifacts", help="agent folder (default: the one `edgeagent demo` builds)")
    serve.add_argument("--backend")
    serve.add_argument("--precision")
    serve.add_argument("--device", help="cpu, gpu, gpu.1, npu, …: where the model runs (the chosen backend's own "
                                        "device); refused with the devices present if it is absent")
    serve.add_argument("--home", metavar="FILE", help="the home's floors, areas and entities (YAML or JSON, as "
                       "Home Assistant's fixtures): slot values, and each request's context, are resolved to its names")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--max-body", type=int, default=defaults.max_body_bytes, metavar="BYTES",
                       help=f"largest request body (default {defaults.max_body_bytes})")
    serve.add_argument("--max-queue", type=int, default=defaults.max_queue, metavar="N",
                       help=f"utterances waiting or running before 503 (default {defaults.max_queue})")
    serve.add_argument("--max-batch", type=int, default=defaults.max_model_batch, metavar="N",
                       help=f"utterances per model call under load (default {defaults.max_model_batch})")
    serve.add_argument("--timeout", type=float, default=defaults.request_timeout_s, metavar="S",
                       help=f"per-request timeout in seconds (default {defaults.request_timeout_s})")
    serve.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s, metavar="S",
                       help=f"longest a client may take to send a request body, then 408 (default {defaults.body_timeout_s})")
    serve.add_argument("--max-connections", type=int, default=defaults.max_connections, metavar="N",
                       help=f"connections served at once; a request on one more gets 503 (default {defaults.max_connections})")
    serve.add_argument("--keep-alive-timeout", type=float, default=defaults.keep_alive_timeout_s, metavar="S",
                       help=f"how long an idle keep-alive connection stays open (default {defaults.keep_alive_timeout_s})")
    serve.add_argument("--graceful-timeout", type=int, default=defaults.graceful_timeout_s, metavar="S",
                       help=f"on SIGTERM, wait this long for requests in flight (default {defaults.graceful_timeout_s})")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=handle)


def handle(args) -> int:
    from ..errors import InputError
    from ..serve import ServeConfig, run
    from .agent import _agent

    missing = [m for m in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"serving needs {', '.join(missing)}: pip install 'edgeagent[serve]'")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a TCP port (0-65535)", field="port")
    config = ServeConfig(max_body_bytes=args.max_body, max_queue=args.max_queue, max_model_batch=args.max_batch,
                         max_batch_items=min(ServeConfig.max_batch_items, args.max_queue),
                         request_timeout_s=args.timeout, graceful_timeout_s=args.graceful_timeout,
                         body_timeout_s=args.body_timeout, max_connections=args.max_connections,
                         keep_alive_timeout_s=args.keep_alive_timeout)
    agent = _agent(args)
    artifact = agent.artifact
    print(f"serving {artifact.backend}/{artifact.precision} from {artifact.path} on http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    run(agent, host=args.host, port=args.port, config=config, log_level=args.log_level,
        access_log=args.access_log)
    return 0
