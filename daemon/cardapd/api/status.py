"""Domain errors → gRPC status: a code, a human message, an ErrorInfo with the reason and
a LocalizedMessage for the people at the terminal.

The rich status travels in the standard `grpc-status-details-bin` trailer
(google.rpc.Status with a google.rpc.ErrorInfo, domain "cardapd"), so any gRPC client can
read the stable reason and metadata (e.g. `tries_left`) without parsing messages.
`status.message` stays English (for developers and logs); a google.rpc.LocalizedMessage
in the call's language carries the reason's meaning and next step from the registry
(`cardap.reasons`), filled from the error's metadata.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cardap import reasons
from cardapd import errors as e
from cardapd.myna.mutual_auth import ApAuthFailed
from cardapd.reads.revocation import RevocationFeedStale
from cardapd.reads.service import ApNotConfigured

DOMAIN = "cardapd"

# Most specific class first: the first match wins.
CODE_FOR: tuple[tuple[type[e.CardapError], grpc.StatusCode], ...] = (
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotAuthorized, grpc.StatusCode.PERMISSION_DENIED),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.ApNotFound, grpc.StatusCode.NOT_FOUND),
    (e.NoReader, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ReaderRemoved, grpc.StatusCode.ABORTED),
    (e.PcscUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.ReaderError, grpc.StatusCode.UNAVAILABLE),
    (e.NoCard, grpc.StatusCode.FAILED_PRECONDITION),
    (e.CardRemoved, grpc.StatusCode.ABORTED),
    (e.CardReset, grpc.StatusCode.ABORTED),
    (e.CardUnresponsive, grpc.StatusCode.UNAVAILABLE),
    (e.NotMyNumberCard, grpc.StatusCode.FAILED_PRECONDITION),
    (e.IntegrityError, grpc.StatusCode.DATA_LOSS),
    # A wrong PIN is the caller's credential failing (D-records: tries_left in metadata);
    # a refused or blocked PIN is the card's state: FAILED_PRECONDITION, nothing was sent.
    (e.InvalidPinError, grpc.StatusCode.UNAUTHENTICATED),
    (e.PinError, grpc.StatusCode.FAILED_PRECONDITION),
    # The gate's access key does not open this AP: configuration or card, not the caller.
    (ApAuthFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (e.CardError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Busy, grpc.StatusCode.UNAVAILABLE),
    (e.Cancelled, grpc.StatusCode.CANCELLED),
    (e.ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.StoreError, grpc.StatusCode.UNAVAILABLE),
    (e.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (RevocationFeedStale, grpc.StatusCode.FAILED_PRECONDITION),
    (ApNotConfigured, grpc.StatusCode.FAILED_PRECONDITION),
)


def code_for(exc: e.CardapError) -> grpc.StatusCode:
    """The gRPC code for a domain error (INTERNAL when nothing matches)."""
    for cls, code in CODE_FOR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: e.CardapError, request_id: str = "", language: str = "en"
              ) -> grpc.Status:
    """A grpc.Status carrying code, the English message, an ErrorInfo detail and (for a
    registered reason) a LocalizedMessage in `language`."""
    code = code_for(exc)
    metadata = dict(exc.metadata)
    if request_id:
        metadata["request_id"] = request_id
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    text = reasons.localized(exc.reason, language, metadata)
    if text:
        localized = any_pb2.Any()
        localized.Pack(error_details_pb2.LocalizedMessage(locale=language, message=text))
        details.append(localized)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message,
                               details=details)
    return rpc_status.to_status(status)


def internal(request_id: str) -> e.CardapError:
    """The error returned for an unexpected exception (the daemon logs the traceback)."""
    return e.CardapError(f"internal error (request {request_id}); see the daemon log",
                         reason="INTERNAL")
