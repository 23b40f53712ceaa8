"""The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (200 or 503 with
the reasons), anything else 404.

`/healthz` is what a load balancer, a monitoring agent or `curl -f` asks: 200 `ok` while
the daemon serves, else 503 with one `REASON: message` line per problem (the reasons are
stable UPPER_SNAKE codes, as in the API). The health function is called on the server's
thread and must only read state.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

Problem = tuple[str, str]
"""A health problem: stable reason, human message."""
Health = Callable[[], list[Problem]]

class QuietHandler(WSGIRequestHandler):
    """No access log on stderr (a scrape every few seconds would flood it)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the line."""


class ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, none outliving the process."""

    daemon_threads = True


TEXT = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]


def make_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of the endpoint."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            try:
                problems = health()
            except Exception as exc:  # a failing check is itself a problem
                problems = [("HEALTH_CHECK_FAILED", f"{type(exc).__name__}: {exc}")]
            body = ("".join(f"{reason}: {message}\n" for reason, message in problems)
                    if problems else "ok\n").encode()
            start_response("503 Service Unavailable" if problems else "200 OK",
                           [*TEXT, ("Content-Length", str(len(body)))])
            return [body]
        body = f"not found: {path} (try /metrics or /healthz)\n".encode()
        start_response("404 Not Found", [*TEXT, ("Content-Length", str(len(body)))])
        return [body]
    return app


def serve(registry: CollectorRegistry, host: str, port: int,
          health: Health) -> tuple[WSGIServer, threading.Thread]:
    """Serve the endpoint on host:port in a daemon thread (port 0 picks one)."""
    class Server(ThreadingServer):
        """ThreadingWSGIServer with the address family of `host` (IPv4 or IPv6)."""

    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    Server.address_family, addr = info[0][0], str(info[0][4][0])
    server = make_server(addr, port, make_app(registry, health), Server,
                         handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
