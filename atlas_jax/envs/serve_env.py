"""`atlas-jax serve-env --env {babyai,textcraft,sciworld} --host 127.0.0.1 --port PORT`.

Serves an in-process environment over AgentGym's HTTP protocol (the routes, bodies and answers
of AgentGym's own server for that environment, see :mod:`atlas_jax.envs.serve_routes`), so
AgentGym's clients and evaluator run against our offline environments, and the two can be
compared black-box.

Standard library only: ``ThreadingHTTPServer``, one thread per connection; each instance has its
own lock, so episodes run in parallel and one instance is never stepped twice at once.
Malformed requests get FastAPI's answers (422 with ``{"detail": [...]}`` for a bad body or query,
404 / 405 for unknown routes / methods); an unexpected failure is a 500, never a crash.
SIGTERM (and Ctrl-C) stops accepting, closes every instance and exits 0.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from atlas_jax.envs.base import TextEnv
from atlas_jax.envs.serve_routes import REQUIRED, ROUTES, EnvService, InstanceTable, RouteError

SERVED = tuple(ROUTES)
MAX_BODY = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=SERVED, help="environment to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port; default 8000)")
    parser.add_argument("--max-instances", type=int, default=64,
                        help="environment instances open at once; /create beyond it answers 503 (default 64)")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")


# -- request validation, as FastAPI/pydantic answers it ---------------------------------
def _issue(kind: str, where: str, name: str, msg: str, value: Any) -> dict:
    return {"type": kind, "loc": [where, name], "msg": msg, "input": value}


def _coerce(kind: type, value: Any) -> tuple[bool, Any]:
    """pydantic's lax coercion for the two field types AgentGym's bodies use."""
    if kind is str:
        return isinstance(value, str), value
    if isinstance(value, bool):
        return True, int(value)
    if isinstance(value, int):
        return True, value
    if isinstance(value, float) and value.is_integer():
        return True, int(value)
    if isinstance(value, str):
        try:
            return True, int(value.strip())
        except ValueError:
            return False, value
    return False, value


def validate(spec: dict, data: Any, where: str) -> tuple[dict, list[dict]]:
    """``(fields, problems)`` for a body (``where="body"``) or query (``"query"``) against ``spec``."""
    if where == "body" and not isinstance(data, dict):
        return {}, [{"type": "model_attributes_type", "loc": ["body"],
                     "msg": "Input should be a valid dictionary or object to extract fields from", "input": data}]
    fields, problems = {}, []
    for name, (kind, default) in spec.items():
        if name not in data:
            if default is REQUIRED:
                problems.append(_issue("missing", where, name, "Field required", data if where == "body" else None))
            else:
                fields[name] = default
            continue
        value = data[name]
        if value is None and default is None:  # Optional[...] = None
            fields[name] = None
            continue
        ok, value = _coerce(kind, value)
        if not ok:
            if kind is str:
                problems.append(_issue("string_type", where, name, "Input should be a valid string", value))
            elif isinstance(value, str):
                problems.append(_issue("int_parsing", where, name,
                                       "Input should be a valid integer, unable to parse string as an integer", value))
            else:
                problems.append(_issue("int_type", where, name, "Input should be a valid integer", value))
        fields[name] = value
    return fields, problems


def make_handler(service: EnvService, quiet: bool) -> type[BaseHTTPRequestHandler]:
    routes = ROUTES[service.env_name]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn: AgentGym's clients reuse nothing, ours do
        server_version = "atlas-jax-serve-env"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            if not quiet:
                sys.stderr.write(f"serve-env {service.env_name}: {format % args}\n")

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = (json.dumps(body, ensure_ascii=False) if content_type == "application/json" else body).encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            route = routes.get((method, url.path))
            if route is None:
                known = any(path == url.path for _, path in routes)
                self._send(405 if known else 404, {"detail": "Method Not Allowed" if known else "Not Found"})
                return
            name, spec = route
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._send(413, {"detail": f"request body over {MAX_BODY} bytes"})
                self.close_connection = True
                return
            raw = self.rfile.read(length) if length else b""
            fields: dict = {}
            if spec is not None:
                if method == "GET":
                    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                    fields, problems = validate(spec, query, "query")
                else:
                    try:
                        data = json.loads(raw) if raw.strip() else None
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        self._send(422, {"detail": [{"type": "json_invalid", "loc": ["body", getattr(e, "pos", 0)],
                                                     "msg": "JSON decode error", "input": {},
                                                     "ctx": {"error": getattr(e, "msg", str(e))}}]})
                        return
                    if data is None:
                        problems = [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
                    else:
                        fields, problems = validate(spec, data, "body")
                if problems:
                    self._send(422, {"detail": problems})
                    return
            try:
                self._send(200, service.handle(name, fields))
            except RouteError as e:
                self._send(e.status, e.body, "application/json" if not isinstance(e.body, str) else "text/plain")
            except Exception:  # noqa: BLE001 - a bug answers 500 and the server stays up
                traceback.print_exc()
                self._send(500, "Internal Server Error", "text/plain")

        def do_GET(self):  # noqa: N802
            self._dispatch("GET")

        def do_POST(self):  # noqa: N802
            self._dispatch("POST")

    return Handler


class EnvServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client connection never blocks shutdown
    allow_reuse_address = True

    def __init__(self, env_name: str, host: str, port: int, make_env: Callable[[], TextEnv] | None = None,
                 max_instances: int = 64, quiet: bool = False):
        if env_name not in ROUTES:
            raise ValueError(f"serve-env: cannot serve {env_name!r}; expected one of {list(SERVED)}")
        if max_instances <= 0:
            raise ValueError(f"serve-env: --max-instances must be positive, got {max_instances}")
        if make_env is None:
            from atlas_jax.envs.registry import make_env as registry_make_env

            def make_env():
                return registry_make_env(env_name)
        self.table = InstanceTable(make_env, max_instances)
        self.service = EnvService(env_name, self.table)
        super().__init__((host, port), make_handler(self.service, quiet))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.table.close_all()


def run(args: argparse.Namespace) -> int:
    try:
        server = EnvServer(args.env, args.host, args.port, max_instances=args.max_instances, quiet=args.quiet)
    except OSError as e:  # port taken, address not local: one line, as every user error
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serve-env: {args.env} on {server.url} (AgentGym protocol; up to {args.max_instances} instances)",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print(f"serve-env: {args.env} stopped", flush=True)
    return 0
