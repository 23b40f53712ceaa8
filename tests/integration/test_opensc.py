"""OpenSC's JPKI driver against the virtual card, through real pcscd and vpcd.

An independent reader of the real card's JPKI AP (OpenSC's `card-jpki.c` and
`pkcs15-jpki.c`) must find on the virtual card what it finds on a real one: the four
certificates (user authentication and its CA, digital signature and its CA) at their file
ids, the signature certificate only after the signing password, both PIN counters read
without spending a try — and never a reason to select the text input assist AP.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv import need

from cardap_sim.stack import Stack
from cardap_sim.vcard.card import VirtualCard

from .conftest import INPUT_ASSIST_AID

SIGN_PASSWORD = "ABC123"  # the virtual card's default signing password (cardap_sim.vcard.jpki)


@pytest.fixture
def ostack(tmp_path: Path) -> Iterator[Stack]:
    """pcscd + vpcd + the simulator, no daemon: OpenSC is the only client."""
    s = Stack(tmp_path / "stack")
    try:
        s.start(daemon=False)
        yield s
    finally:
        s.stop()


def pkcs15(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("pkcs15-tool"), "--reader", "0", *args], env=stack.env,
                          capture_output=True, text=True, timeout=60, check=False)


def pem_der(text: str) -> bytes:
    body = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    assert body is not None, text
    return base64.b64decode("".join(body.group(1).split()))


def inserted(stack: Stack, card: Path) -> None:
    """Insert `card` in slot 0 and wait until pcscd reports it to OpenSC."""
    stack.control.insert(0, card)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pkcs15(stack, "--list-pins").returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("OpenSC never saw the card")


def test_opensc_finds_all_four_certificates(ostack: Stack) -> None:
    path = ostack.demo_card()
    state = VirtualCard.load(path).state
    inserted(ostack, path)

    listed = pkcs15(ostack, "--list-certificates")
    assert listed.returncode == 0, listed.stderr
    labels = re.findall(r"X\.509 Certificate \[(.*?)\]\s+Object Flags\s+: \[(.*?)\].*?"
                        r"Path\s+: (\w+)", listed.stdout, re.S)
    assert [(name, path_) for name, _, path_ in labels] == [
        ("User Authentication Certificate", "000a"), ("Digital Signature Certificate", "0001"),
        ("User Authentication Certificate CA", "000b"),
        ("Digital Signature Certificate CA", "0002")]

    # IDs 1, 3, 4 read without any PIN and hold exactly the card's certificates.
    for cert_id, der in (("1", state.auth_cert), ("3", state.auth_ca_cert),
                         ("4", state.sign_ca_cert)):
        out = pkcs15(ostack, "--read-certificate", cert_id)
        assert out.returncode == 0, f"certificate {cert_id}: {out.stderr}"
        assert pem_der(out.stdout) == der

    # The signature certificate is there, but behind the signing password.
    locked = pkcs15(ostack, "--read-certificate", "2")
    assert locked.returncode != 0
    assert "File not found" not in locked.stderr
    opened = pkcs15(ostack, "--read-certificate", "2", "--verify-pin", "--auth-id", "02",
                    "--pin", SIGN_PASSWORD)
    assert opened.returncode == 0, opened.stderr
    assert pem_der(opened.stdout) == state.sign_cert

    pins = pkcs15(ostack, "--list-pins")
    assert re.findall(r"Tries left\s+: (\d+)", pins.stdout) == ["3", "5"]
    assert INPUT_ASSIST_AID not in ostack.control.selects(0)


def test_input_assist_ap_asks_for_its_pin_through_pcscd(ostack: Stack) -> None:
    """The simulator is never looser than a card: the text input assist AP's files answer
    READ BINARY only after VERIFY of its own 4-digit PIN (the daemon never selects it; this
    is a client of the simulator's own, through pcscd)."""
    path = ostack.demo_card("assist")
    inserted(ostack, path)
    select_ap = "00:A4:04:0C:0A:" + ":".join(f"{b:02X}" for b in INPUT_ASSIST_AID)

    def send(*apdus: str) -> list[str]:
        args = [need("opensc-tool"), "--reader", "0", "-c", "default"]
        for a in apdus:
            args += ["-s", a]
        out = subprocess.run(args, env=ostack.env, capture_output=True, text=True,
                             timeout=60, check=False)
        return [(a.upper(), b.upper()) for a, b in re.findall(
            r"SW1=0x([0-9a-f]{2}), SW2=0x([0-9a-f]{2})", out.stdout, re.I)]

    locked = send(select_ap, "00:A4:02:0C:02:00:01", "00:B0:00:00:0C")
    assert locked == [("90", "00"), ("90", "00"), ("69", "82")]
    pin = ":".join(f"{b:02X}" for b in b"1234")
    opened = send(select_ap, "00:A4:02:0C:02:00:11", "00:20:00:80", f"00:20:00:80:04:{pin}",
                  "00:A4:02:0C:02:00:01", "00:B0:00:00:0C")
    assert opened == [("90", "00"), ("90", "00"), ("63", "C3"), ("90", "00"), ("90", "00"),
                      ("90", "00")]
