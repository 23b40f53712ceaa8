"""Shared pieces of `cardapctl`: output (text, JSON with real numbers), argument types,
confirmation, and the exit codes (re-exported from `cardap.exitcodes`, the one table)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from cardap import exitcodes
from cardap.i18n import DEFAULT, from_environment, tr

EXIT_OK, EXIT_FAIL, EXIT_USAGE = exitcodes.OK, exitcodes.FAIL, exitcodes.USAGE
EXIT_PRECONDITION, EXIT_DENIED = exitcodes.PRECONDITION, exitcodes.DENIED
EXIT_UNAVAILABLE, EXIT_UNIMPLEMENTED = exitcodes.UNAVAILABLE, exitcodes.UNIMPLEMENTED
EXIT_ABORTED = exitcodes.ABORTED
EXIT_AUDIT_BROKEN = exitcodes.AUDIT_BROKEN  # `audit verify` / `report`: chain broken

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _numbers(msg: Message, data: dict[str, Any]) -> dict[str, Any]:
    """Turn the 64-bit integers MessageToDict writes as strings (proto3 JSON) into numbers,
    walking the message's descriptor (nested messages, repeated fields and maps)."""
    for field in msg.DESCRIPTOR.fields:
        name = field.name
        if name not in data:
            continue
        value = data[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vfield = field.message_type.fields_by_name["value"]
            if vfield.type in _INT64:
                data[name] = {k: int(v) for k, v in value.items()}
            elif vfield.message_type is not None:
                sub = getattr(msg, name)
                data[name] = {k: _numbers(sub[k], v) for k, v in value.items()}
        elif field.type in _INT64:
            data[name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None and field.message_type.full_name not in (
                "google.protobuf.Timestamp", "google.protobuf.Duration"):
            sub = getattr(msg, name)
            if isinstance(value, list):
                data[name] = [_numbers(m, v) for m, v in zip(sub, value, strict=True)]
            elif isinstance(value, dict):
                data[name] = _numbers(sub, value)
    return data


def as_dict(msg: Message) -> dict[str, Any]:
    """A message as a JSON-ready dict: proto field names, defaults included, every integer
    a number (also the 64-bit ones), timestamps RFC 3339, enums by name."""
    return _numbers(msg, MessageToDict(msg, preserving_proto_field_name=True,
                                       always_print_fields_with_no_presence=True))


def dumps(obj: Any) -> str:
    """One JSON line (UTF-8 kept)."""
    return json.dumps(obj, ensure_ascii=False)


def lang() -> str:
    """The language of cardapctl's texts for people: LANGUAGE, LC_ALL, LC_MESSAGES, LANG
    (`--json` output is codes and stays the same in every language)."""
    return from_environment()


def emit(args: argparse.Namespace, msg: Message, text: Callable[[Any], str]) -> None:
    """Print one result as JSON or text."""
    if args.json:
        print(dumps(as_dict(msg)), flush=True)
    else:
        print(text(msg), flush=True)


def local_time(ts: Any) -> str:
    """A Timestamp as local time with milliseconds (`2026-12-07 18:42:02.379`)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    when = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`READER_STATE_EMPTY` → `empty`."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


def seconds(text: str) -> float:
    """A positive number of seconds (argparse type): `--timeout -1` is a usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def positive_int(text: str) -> int:
    """A whole number above 0 (argparse type)."""
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number above 0")
    return int(text)


class Msg:
    """A text for people kept as its English message id and values, said in any language
    (`text`); a value may itself be a Msg or a function of the language. A CliError keeps
    one: its first line stays English, the line below is in the user's language."""

    def __init__(self, msgid: str, /, **values: Any) -> None:
        self.msgid = msgid
        self.values = values

    def text(self, language: str) -> str:
        """The text in `language`, its values said in the same language."""
        values = {k: v.text(language) if isinstance(v, Msg)
                  else v(language) if callable(v) else v for k, v in self.values.items()}
        return tr(language, self.msgid, **values)

    def __str__(self) -> str:
        return self.text(DEFAULT)


class CliError(Exception):
    """A client-side failure with its exit code (bad input detected before or after a call).

    `str()` is the English message (the line scripts and logs read); a Msg message is also
    said in the user's language (`localized`)."""

    def __init__(self, message: str | Msg, code: int = EXIT_USAGE) -> None:
        super().__init__(str(message))
        self.code = code
        self.msg = message if isinstance(message, Msg) else None

    def localized(self, language: str) -> str:
        """The message in `language` ("" when it exists only in English)."""
        return self.msg.text(language) if self.msg is not None else ""


def confirm(question: Msg, assume_yes: bool) -> None:
    """Ask before a destructive step; CliError (exit 2) when refused or nobody can answer.

    `--yes` answers for scripts; without it the question goes to the terminal."""
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise CliError(Msg("{question}: refusing without confirmation; stdin is not a "
                           "terminal, give -y/--yes to confirm",
                           question=lambda la: question.text(la).rstrip("?？")))
    print(tr(lang(), "{question} [y/N] ", question=question.text(lang())), end="",
          file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes", "はい"):
        raise CliError(Msg("cancelled: nothing was changed"), exitcodes.ABORTED)


def quiet_broken_pipe() -> int:
    """The output was closed early (`| head`): silence the exit flush; OUTPUT_CLOSED."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass
    return exitcodes.OUTPUT_CLOSED


def sentence(language: str, text: str) -> str:
    """A help line as a description sentence: capitalised with a full stop in English,
    with 。 in Japanese."""
    if language == "ja":
        return text + "。"
    return text[0].upper() + text[1:] + "."


def command(parent: Any, name: str, help_id: str, parents: list[argparse.ArgumentParser],
            language: str) -> argparse.ArgumentParser:
    """A subcommand whose help is the message id `help_id` said in `language`, and whose
    description is that help as a sentence (what `--help` and the man page show)."""
    said = tr(language, help_id)
    return parent.add_parser(name, help=said,  # type: ignore[no-any-return]
                             description=sentence(language, said), parents=parents)
