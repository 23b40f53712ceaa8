"""Shared helpers for the Type A/D/custom read and revocation tests through the real stack."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import grpc

from cardap.client import CardapClientError
from cardap.v1 import cards_pb2, terminal_pb2, terminal_pb2_grpc
from cardap_sim.loadsvc.catalogue import ApType, dev_catalogue
from cardap_sim.loadsvc.keystore import FileKeyStore
from cardap_sim.stack import Stack
from cardap_sim.vcard.control import SimControlError
from cardap_sim.vcard.identity import check_char

from .conftest import insert_and_wait

SESSION = [("cardap-session", "test:org-a:op-1")]
A_AID, D_AID, CUSTOM_AID = "D392F000410A0002", "D392F000440A0003", "D392F000580A0004"
C_AID = "D392F000430A0001"
CUSTOM_USER_ID = "CUST0MER0001"[:12] + check_char("CUST0MER0001"[:12])
WRONG_PIN = b"0000"


def secrets(stack: Stack, ref: str) -> tuple[str, str]:
    """(access key hex, system PIN) the loading service personalises AP `ref` with."""
    s = FileKeyStore(stack.certs_dir / "card-keys.json").ap_secrets(ref)
    return s.access_key.hex(), s.pin


def gate_config(stack: Stack, *, a_pin: str = "caller", a_key: str | None = None,
                floor: int = 1, revocation: str = "") -> str:
    """[[read.aps]] for the dev catalogue's A (caller PIN), D (system PIN), custom and C."""
    a_hex, pin = secrets(stack, "org-a/org-a-cert-a")
    d_hex, d_pin = secrets(stack, "org-a/org-a-records-d")
    a_extra = f'system_pin = "{pin}"\n' if a_pin == "system" else ""
    return (f'[pin]\nfloor = {floor}\n\n{revocation}\n'
            f'[[read.aps]]\naid = "{A_AID}"\ntype = "A"\norganisation = "org-a"\n'
            f'access_key_hex = "{a_key or a_hex}"\npin = "{a_pin}"\n{a_extra}\n'
            f'[[read.aps]]\naid = "{D_AID}"\ntype = "D"\norganisation = "org-a"\n'
            f'access_key_hex = "{d_hex}"\npin = "system"\nsystem_pin = "{d_pin}"\n\n'
            f'[[read.aps]]\naid = "{CUSTOM_AID}"\ntype = "custom"\norganisation = "org-a"\n'
            f'locator = {{ tag = "C1" }}\n\n'
            f'[[read.aps]]\naid = "{C_AID}"\ntype = "C"\norganisation = "org-a"\n')


def start_gate(stack: Stack, **kw: Any) -> None:
    """(Re)start the daemon with the gate configuration (config file 0600: inline secrets)."""
    stack.stop_daemon()
    stack.extra_config = gate_config(stack, **kw)
    stack.write_config()
    os.chmod(stack.config_path, 0o600)
    stack.start_daemon()


INFO_LEN = 118


def write_catalogue(path: Path) -> Path:
    """The dev catalogue with Type A/D info fields of exactly 118 bytes.

    The card model's Type A/D records are exactly 255 bytes (118-byte infos) and the reader
    checks that strictly; the dev catalogue's short infos ("ORG-A") would not read back.
    """
    cat = dev_catalogue()
    aps = []
    for ap in cat.aps.values():
        info = ap.info
        if ap.type in (ApType.A, ApType.D):
            info = tuple(i.ljust(INFO_LEN, b" ") for i in info)
        aps.append({"id": ap.ap_id, "display_name": ap.display_name, "type": ap.type.value,
                    "instance_aid": ap.instance_aid.hex(), "load_file_aid": ap.load_file_aid.hex(),
                    "module_aid": ap.module_aid.hex(), "area": ap.area,
                    "image_bytes": dict(ap.image_bytes), "info": [i.hex() for i in info],
                    "access_key_ref": ap.access_key_ref, "pin_try_limit": ap.pin_try_limit})
    orgs = [{"id": o.org_id, "name": o.name, "may_load": sorted(o.may_load),
             "municipality": o.municipality} for o in cat.organisations.values()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ap": aps, "organisation": orgs}))
    return path


def new_stack(root: Path, **kw: Any) -> Stack:
    """pcscd, simulator and loading service up; the daemon started with the gate config."""
    s = Stack(root / "stack", loading=True, test_sessions=True)
    s.catalogue = write_catalogue(root / "catalogue.json")
    s.start(daemon=False)
    s.write_certs()
    start_gate(s, **kw)
    return s


def stub(stack: Stack, role: str) -> tuple[grpc.Channel, terminal_pb2_grpc.TerminalStub]:
    """A raw stub on `role`'s socket."""
    ch = grpc.insecure_channel(f"unix://{stack.socket(role)}")
    return ch, terminal_pb2_grpc.TerminalStub(ch)


def call(stack: Stack, role: str, method: str, request: Any, **kw: Any) -> Any:
    """One unary call; errors as CardapClientError (code, reason, metadata)."""
    ch, t = stub(stack, role)
    with ch:
        try:
            return getattr(t, method)(request, timeout=30, **kw)
        except grpc.RpcError as exc:
            raise CardapClientError.from_rpc_error(exc) from None


def load(stack: Stack, ap_id: str, custom_user_id: str = "") -> str:
    """LoadAp through the kiosk socket; returns the user ID the service assigned."""
    ch, t = stub(stack, "kiosk")
    with ch:
        events = list(t.LoadAp(terminal_pb2.LoadApRequest(ap_id=ap_id,
                                                          custom_user_id=custom_user_id),
                               metadata=SESSION, timeout=60))
    result = next(e.result for e in events if e.HasField("result"))
    assert result.ok, result
    return str(result.user_id)


def loaded_card(stack: Stack, name: str = "gate") -> tuple[Path, dict[str, str]]:
    """A card in slot 0 with the A, D, custom and C APs loaded: (card file, user IDs)."""
    card = stack.demo_card(name)
    insert_and_wait(stack, 0, card)
    ids = {"A": load(stack, "org-a-cert-a"), "D": load(stack, "org-a-records-d"),
           "custom": load(stack, "org-a-custom", CUSTOM_USER_ID),
           "C": load(stack, "org-a-staff-c")}
    return card, ids


def read(stack: Stack, ap_type: int, aid: str, pin: bytes = b"",
         fresh: bool = False) -> terminal_pb2.ReadUserIdResponse:
    """ReadUserId on the gate socket."""
    return call(stack, "gate", "ReadUserId",  # type: ignore[no-any-return]
                terminal_pb2.ReadUserIdRequest(type=ap_type, aid=aid, pin=pin, fresh=fresh))


def ap_pin_tries(card: Path, aid: str) -> int:
    """The AP PIN's tries left as stored in the card file."""
    data = json.loads(card.read_text())
    found = _find_ap(data, aid)
    return int(found["pin"]["tries"])


def _find_ap(node: Any, aid: str) -> dict[str, Any]:
    """The card file's entry of instance `aid` (searched, the file layout is the sim's)."""
    if isinstance(node, dict):
        if node.get("aid") == aid and "pin" in node:
            return node
        for v in node.values():
            try:
                return _find_ap(v, aid)
            except KeyError:
                pass
    elif isinstance(node, list):
        for v in node:
            try:
                return _find_ap(v, aid)
            except KeyError:
                pass
    raise KeyError(aid)


def verify_headers(stack: Stack) -> int | None:
    """VERIFY commands (INS 20, plain or SM) the card in slot 0 received; None if the
    simulator cannot tell (no `apdus` control command)."""
    apdus = getattr(stack.control, "apdus", None)
    if apdus is None:
        return None
    try:
        return sum(1 for h in apdus(0) if len(h) >= 2 and h[1] == 0x20)
    except SimControlError:  # an older simulator without the command
        return None


def clear_apdus(stack: Stack) -> None:
    """Forget the recorded APDU headers (when the simulator records them)."""
    clear = getattr(stack.control, "clear_apdus", None)
    if clear is not None:
        with contextlib.suppress(SimControlError):  # an older simulator
            clear(0)


STATUS = cards_pb2
