"""Shared pieces of `cardapctl`: exit codes and output helpers (used by cli and cli_ops)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_PRECONDITION = 0, 1, 2, 3
EXIT_DENIED, EXIT_UNAVAILABLE, EXIT_UNIMPLEMENTED, EXIT_ABORTED = 4, 5, 6, 7
EXIT_AUDIT_BROKEN = 10  # `audit verify` / `report`: the chain does not verify


def as_dict(msg: Message) -> dict[str, Any]:
    """A message as JSON-ready dict (proto field names, defaults included)."""
    return MessageToDict(msg, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def emit(args: argparse.Namespace, msg: Message, text: Callable[[Any], str]) -> None:
    """Print one result as JSON or text."""
    if args.json:
        print(json.dumps(as_dict(msg), ensure_ascii=False), flush=True)
    else:
        print(text(msg), flush=True)


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`READER_STATE_EMPTY` → `empty`."""
    return str(enum.Name(value)).removeprefix(prefix).lower()
