"""What the daemon is doing, for every log record: operation, reader, request id, role.

The values live in `contextvars`, set where the work starts (the gRPC layer when a call is
admitted, the reader owner's thread, the PC/SC monitor thread), and `ContextFilter` copies
them onto each record that did not name them itself (`extra={"reader": ...}` wins). An
asyncio task inherits the context of the code that created it; a thread does not, so work
handed to a thread goes through `carry`.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

FIELDS = ("request_id", "operation", "reader", "role")

_VARS: dict[str, contextvars.ContextVar[str]] = {
    name: contextvars.ContextVar(f"cardapd_log_{name}", default="") for name in FIELDS}
# words of a CamelCase name; an acronym keeps its plural s: ListCardAPs -> list_card_aps
_WORD = re.compile(r"[A-Z]{2,}s(?![a-z])|[A-Z]{2,}(?![a-z])|[A-Z]?[a-z0-9]+|[A-Z]")


def _check(fields: dict[str, str]) -> None:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")


def current() -> dict[str, str]:
    """The fields set in this context (empty ones left out)."""
    return {name: value for name, var in _VARS.items() if (value := var.get())}


def set_fields(**fields: str) -> None:
    """Set fields for the rest of this context (a gRPC call's own task, a thread).

    Use `bind` where the context outlives the work (a test, a long-lived task).
    """
    _check(fields)
    for name, value in fields.items():
        _VARS[name].set(value)


@contextmanager
def bind(**fields: str) -> Iterator[None]:
    """Set fields for the body of the `with` (an empty string clears a field)."""
    _check(fields)
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def carry(fn: Callable[P, T], /, **fields: str) -> Callable[P, T]:
    """`fn` to run in another thread with the caller's context, plus `fields`.

    The context is copied now (so the values of the request that submits the work travel
    with it) and each call runs in its own copy of that copy (a Context cannot be entered
    twice at once), so nothing set inside leaks back.
    """
    _check(fields)
    ctx = contextvars.copy_context()

    def run_bound(*args: P.args, **kwargs: P.kwargs) -> T:
        set_fields(**fields)
        return fn(*args, **kwargs)

    @functools.wraps(fn)
    def carried(*args: P.args, **kwargs: P.kwargs) -> T:
        return ctx.copy().run(run_bound, *args, **kwargs)
    return carried


@functools.lru_cache(maxsize=256)
def operation_name(method: str) -> str:
    """A gRPC method name as a log operation: `ReadUserID` -> `read_user_id`."""
    return "_".join(_WORD.findall(method)).lower() or method


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record that has none of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if not getattr(record, name, None):
                value = var.get()
                if value:
                    setattr(record, name, value)
        return True
