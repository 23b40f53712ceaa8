"""A small synchronous client of the cardapd local API.

Errors come back as `CardapClientError` with the gRPC code, the daemon's stable reason
(from the ErrorInfo detail) and its metadata, so callers branch on `reason`, not on text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cardap.v1 import cards_pb2, terminal_pb2, terminal_pb2_grpc

DEFAULT_SOCKET_DIR = Path("/run/cardapd")


def default_socket(role: str, socket_dir: Path | None = None) -> Path:
    """The socket of a role: $CARDAPD_SOCKET_DIR or /run/cardapd, then `<role>.sock`."""
    base = socket_dir or Path(os.environ.get("CARDAPD_SOCKET_DIR", DEFAULT_SOCKET_DIR))
    return base / f"{role}.sock"


class CardapClientError(Exception):
    """A failed call: gRPC code, stable reason, human message and metadata."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str,
                 metadata: dict[str, str]) -> None:
        super().__init__(f"{code.name} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = metadata

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> CardapClientError:
        """Decode the rich status (ErrorInfo) of a failed call."""
        call: Any = err
        code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
        message = call.details() if hasattr(call, "details") else str(err)
        reason, metadata = code.name, {}
        try:
            status = rpc_status.from_call(call)
        except ValueError:
            status = None
        if status is not None:
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
                    break
        if code == grpc.StatusCode.UNAVAILABLE and reason == "UNAVAILABLE":
            reason = "DAEMON_UNREACHABLE"
        return cls(code, reason, message or "", metadata)


class CardapClient:
    """Connects to one cardapd socket (`unix:/path` or a path)."""

    def __init__(self, socket: str | Path, *, timeout: float = 10.0,
                 request_id: str | None = None, session: str | None = None) -> None:
        target = str(socket)
        if not target.startswith("unix:"):
            target = f"unix:{target}"
        self.channel = grpc.insecure_channel(target)
        self.stub = terminal_pb2_grpc.TerminalStub(self.channel)
        self.timeout = timeout
        meta = []
        if request_id:
            meta.append(("x-request-id", request_id))
        if session:  # the operator session token for load/delete (kiosk socket)
            meta.append(("cardap-session", session))
        self._metadata = tuple(meta) or None

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> CardapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise CardapClientError.from_rpc_error(err) from None

    def _stream(self, method: Any, request: Any,
                timeout: float | None = None) -> Iterator[Any]:
        call = method(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise CardapClientError.from_rpc_error(err) from None
        finally:
            call.cancel()

    def status(self) -> terminal_pb2.GetStatusResponse:
        """Daemon status."""
        return self._call(self.stub.GetStatus, terminal_pb2.GetStatusRequest())  # type: ignore[no-any-return]

    def readers(self) -> terminal_pb2.ListReadersResponse:
        """Readers and their cards."""
        return self._call(self.stub.ListReaders, terminal_pb2.ListReadersRequest())  # type: ignore[no-any-return]

    def watch(self, readers: Sequence[str] = (),
              timeout: float | None = None) -> Iterator[cards_pb2.CardEvent]:
        """Card events: the snapshot, then live events (until the iterator is closed)."""
        return self._stream(self.stub.WatchCardEvents,
                            terminal_pb2.WatchCardEventsRequest(readers=list(readers)), timeout)

    def read_user_id(self, reader: str = "", aid: str = "", *, fresh: bool = False,
                     ap_type: int = cards_pb2.AP_TYPE_C) -> terminal_pb2.ReadUserIDResponse:
        """Read a user ID (Type C)."""
        return self._call(self.stub.ReadUserID, terminal_pb2.ReadUserIDRequest(  # type: ignore[no-any-return]
            reader=reader, aid=aid, fresh=fresh, type=ap_type))  # type: ignore[arg-type]

    def diagnose(self, reader: str = "") -> terminal_pb2.DiagnoseResponse:
        """Card fault isolation."""
        return self._call(self.stub.Diagnose, terminal_pb2.DiagnoseRequest(reader=reader))  # type: ignore[no-any-return]

    def loadable_aps(self) -> terminal_pb2.ListLoadableAPsResponse:
        """The APs the session's organisation may load, and the preset sets."""
        return self._call(self.stub.ListLoadableAPs,  # type: ignore[no-any-return]
                          terminal_pb2.ListLoadableAPsRequest())

    def card_aps(self, reader: str = "") -> terminal_pb2.ListCardAPsResponse:
        """The APs on the card and the free space per area."""
        return self._call(self.stub.ListCardAPs,  # type: ignore[no-any-return]
                          terminal_pb2.ListCardAPsRequest(reader=reader))

    def load_ap(self, ap_id: str = "", *, preset: str = "", reader: str = "",
                custom_user_id: str = "",
                timeout: float | None = 120.0) -> Iterator[terminal_pb2.LoadAPEvent]:
        """Load one AP (or a preset set): progress events, then a result per AP."""
        request = terminal_pb2.LoadAPRequest(reader=reader, custom_user_id=custom_user_id)
        if preset:
            request.preset = preset
        else:
            request.ap_id = ap_id
        return self._stream(self.stub.LoadAP, request, timeout)

    def delete_ap(self, aid: str, reader: str = "") -> terminal_pb2.DeleteAPResponse:
        """Delete an AP instance (ALREADY_ABSENT is a success)."""
        return self._call(self.stub.DeleteAP,  # type: ignore[no-any-return]
                          terminal_pb2.DeleteAPRequest(reader=reader, aid=aid))

    def metrics(self, interval_s: int = 10, prefixes: Sequence[str] = (),
                timeout: float | None = None) -> Iterator[terminal_pb2.MetricsSnapshot]:
        """Metric snapshots every `interval_s` seconds."""
        return self._stream(self.stub.WatchMetrics, terminal_pb2.WatchMetricsRequest(
            interval_s=interval_s, prefixes=list(prefixes)), timeout)
