"""The protos as a contract (docs/decisions.md, "The protos as a contract"): one acronym
style, each deprecated v1.0.0 name wire-identical to its successor, every exception to
buf's lint rules justified, and buf breaking refusing what would break a v1.0.0 client."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from testenv import need

from cardap.v1 import audit_pb2, cards_pb2, loading_pb2, operators_pb2, terminal_pb2
from cardapd.api.roles import RENAMED
from release import tags

ROOT = Path(__file__).resolve().parents[2]
FILES = (audit_pb2, cards_pb2, loading_pb2, operators_pb2, terminal_pb2)
SERVICE = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]
# Enum types keep their v1.0.0 names until v2: proto3 puts enum values in the package's
# scope, so an ApType beside APType could not have the values AP_TYPE_* (their JSON names).
FROZEN_ENUMS = {"APType", "UserIDStatus"}
ACRONYM = re.compile(r"[A-Z]{2}")  # "ID", "AP": the style is "Id", "Ap"


def deprecated(d: object) -> bool:
    return bool(d.GetOptions().deprecated)  # type: ignore[attr-defined]


def test_one_acronym_style() -> None:
    odd = []
    for module in FILES:
        f = module.DESCRIPTOR
        for service in f.services_by_name.values():
            odd += [m.name for m in service.methods
                    if ACRONYM.search(m.name) and not deprecated(m)]
        odd += [n for n, m in f.message_types_by_name.items()
                if ACRONYM.search(n) and not deprecated(m)]
        odd += [n for n in f.enum_types_by_name if ACRONYM.search(n) and n not in FROZEN_ENUMS]
    assert odd == []


def test_renamed_methods_are_the_deprecated_ones() -> None:
    assert set(RENAMED) == {m.name for m in SERVICE.methods if deprecated(m)}
    for old, new in RENAMED.items():
        assert old.lower() == new.lower()
        assert not deprecated(SERVICE.methods_by_name[new])
        # a grpc-js client's camel-case name goes to the successor (it comes later)
        names = [m.name for m in SERVICE.methods]
        assert names.index(old) < names.index(new), old


def fields(message: Descriptor) -> list[tuple[object, ...]]:
    """What is on the wire and in JSON, with message types named as their successors."""
    out = []
    for f in message.fields:
        kind: object = f.type
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            kind = ("map", tuple(fields(f.message_type)))
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            kind = successor(f.message_type).full_name
        elif f.type == FieldDescriptor.TYPE_ENUM:
            kind = f.enum_type.full_name
        out.append((f.number, f.name, f.json_name, kind, f.is_repeated, f.has_presence,
                    f.containing_oneof.name if f.containing_oneof else None))
    return sorted(out, key=lambda t: str(t[0]))


def successor(message: Descriptor) -> Descriptor:
    """The message itself, or for a deprecated one, the message of its new name."""
    if not deprecated(message):
        return message
    matches = [m for module in FILES for m in module.DESCRIPTOR.message_types_by_name.values()
               if m.name.lower() == message.name.lower() and not deprecated(m)]
    assert len(matches) == 1, f"{message.name} has no successor"
    return matches[0]


def test_deprecated_methods_read_and_write_their_successors_bytes() -> None:
    """The daemon serves an old name with its successor's messages (api/server.py)."""
    for old, new in RENAMED.items():
        a, b = SERVICE.methods_by_name[old], SERVICE.methods_by_name[new]
        assert (a.client_streaming, a.server_streaming) == (b.client_streaming,
                                                            b.server_streaming)
        for x, y in ((a.input_type, b.input_type), (a.output_type, b.output_type)):
            assert successor(x) is y, (old, x.name, y.name)
            assert fields(x) == fields(y), (x.name, y.name)


def test_every_deprecated_message_has_a_wire_identical_successor() -> None:
    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            if deprecated(message):
                assert fields(message) == fields(successor(message)), message.name


def buf_rules_excepted() -> tuple[set[str], set[str]]:
    """The lint rules buf.yaml turns off, and those the protos ignore in comments."""
    config = (ROOT / "buf.yaml").read_text(encoding="utf-8")
    block = config.split("  except:\n", 1)[1].split("\n  disallow_comment_ignores", 1)[0]
    excepted = set(re.findall(r"^    - ([A-Z_]+)$", block, re.M))
    ignored = set()
    for proto in (ROOT / "proto").rglob("*.proto"):
        ignored |= set(re.findall(r"buf:lint:ignore ([A-Z_]+)",
                                  proto.read_text(encoding="utf-8")))
    return excepted, ignored


def test_every_lint_exception_is_named_and_justified() -> None:
    config = (ROOT / "buf.yaml").read_text(encoding="utf-8")
    decisions = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    excepted, ignored = buf_rules_excepted()
    assert excepted
    assert ignored
    for rule in excepted:  # a comment above it says why
        assert re.search(rf"^    # {rule}: \S", config, re.M), rule
    for rule in ignored:  # buf.yaml lists each element the protos exempt, and why
        assert re.search(rf"^  # - {rule}: \S", config, re.M), rule
    for rule in excepted | ignored:
        assert rule in decisions, f"{rule} is not in docs/decisions.md"


def archive_of_release(tmp: Path) -> Path:
    """The v1.0.0 protos, as `make proto-lint` compares with them."""
    tar = tmp / "v1.0.0.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(tar),
                    tags.commit_of("v1.0.0"), "proto"], cwd=ROOT, check=True)
    return tar


def test_buf_breaking_refuses_dropping_a_v1_name(tmp_path: Path) -> None:
    """Take the deprecated ReadUserID out of a copy of the protos: buf breaking (FILE)
    against v1.0.0 fails and names it; the protos as they are pass."""
    buf = need("buf")
    tar = archive_of_release(tmp_path)
    against = f"{tar}#format=tar,subdir=proto"
    ok = subprocess.run([buf, "breaking", "--against", against], cwd=ROOT,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", copy / "proto")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    terminal = copy / "proto" / "cardap" / "v1" / "terminal.proto"
    text = terminal.read_text(encoding="utf-8")
    cut = re.sub(r"  rpc ReadUserID\(ReadUserIDRequest\)[^}]*\}\n", "", text)
    assert cut != text
    terminal.write_text(cut, encoding="utf-8")
    broken = subprocess.run([buf, "breaking", "--against", against], cwd=copy,
                            capture_output=True, text=True, check=False)
    assert broken.returncode != 0
    assert 'RPC "ReadUserID"' in broken.stdout + broken.stderr, broken.stdout
