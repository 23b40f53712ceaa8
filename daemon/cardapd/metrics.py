"""Prometheus metrics of the daemon, on a registry of its own.

`/metrics` on localhost and the WatchMetrics stream read the same registry, so both carry
the same numbers. Label values are bounded sets (operation names, stable reasons, gRPC
codes, reader names), never user IDs or card ids.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

import cardapd

OPERATION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0)
APDU_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class Sample:
    """One exposition sample (name, labels, value)."""

    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build = Info("cardapd_build", "Version of the running daemon.", registry=r)
        self.build.info({"version": cardapd.__version__})
        self.operations = Counter(
            "cardapd_operations", "Operations by kind and result (reason is a stable code).",
            ["operation", "result", "reason"], registry=r)
        self.operation_seconds = Histogram(
            "cardapd_operation_duration_seconds", "Time to complete an operation.",
            ["operation"], buckets=OPERATION_BUCKETS, registry=r)
        self.apdu_seconds = Histogram(
            "cardapd_apdu_duration_seconds", "Round trip of one APDU to the card.",
            buckets=APDU_BUCKETS, registry=r)
        self.readers = Gauge("cardapd_readers", "Readers seen through PC/SC.", registry=r)
        self.cards = Gauge("cardapd_cards_present", "Readers holding a card.", registry=r)
        self.pcsc_up = Gauge("cardapd_pcsc_up", "1 when pcscd is reachable.", registry=r)
        self.card_events = Counter(
            "cardapd_card_events", "Card and reader events by kind.", ["kind"], registry=r)
        self.event_subscribers = Gauge(
            "cardapd_event_subscribers", "Clients watching card events.", registry=r)
        self.grpc_requests = Counter(
            "cardapd_grpc_requests", "gRPC calls by method, socket role and status code.",
            ["method", "role", "code"], registry=r)
        self.audit_rows = Counter(
            "cardapd_audit_rows_written", "Audit rows appended.", registry=r)
        self.audit_head = Gauge(
            "cardapd_audit_head_sequence", "Sequence number of the newest audit row.",
            registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on host:port (port 0 picks one); returns the port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def samples(self, prefixes: Iterable[str] = ()) -> list[Sample]:
        """Every current sample, optionally only families starting with a prefix."""
        wanted = tuple(prefixes)
        out: list[Sample] = []
        for family in self.registry.collect():
            if wanted and not family.name.startswith(wanted):
                continue
            out.extend(Sample(s.name, dict(s.labels), float(s.value)) for s in family.samples)
        return out
