"""Virtual card: a tear after every APDU of a Type D load leaves exactly that APDU's state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from _typed_host import EXT, load_script, open_scp, secure, send, spec

from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.errors import CardTorn
from cardlib.gp.commands import delete, get_data, select
from cardlib.gp.registry import Scope, read_registry

AP = spec("D", image_size=700)


def run_load(card: VirtualCard) -> int:
    """The whole load as a terminal sends it; returns the APDUs answered (stops at a tear)."""
    try:
        assert send(card, select(card.isd.aid)).sw == 0x9000
        session = open_scp(card)  # SELECT again, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE
        for cmd in load_script(card, session, AP):
            assert secure(card, session, cmd).sw == 0x9000
    except CardTorn:
        pass
    return card.apdu_count


def snapshot(path: Path) -> dict[str, Any]:
    """The card file's content."""
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("profile", ["vendor-a", "vendor-b"])
def test_tear_after_every_apdu(tmp_path: Path, profile: str) -> None:
    base = tmp_path / "base.json"
    VirtualCard.create(profile=profile, path=base, serial=0x0BADCAFE)
    # reference run: the card file after each answered APDU
    ref_path = tmp_path / "ref.json"
    shutil.copy(base, ref_path)
    ref = VirtualCard.load(ref_path)
    ref.power_on()
    states = [snapshot(ref_path)]
    original = ref.transmit

    def recording(raw: bytes) -> bytes:
        out = original(raw)
        states.append(snapshot(ref_path))
        return out

    ref.transmit = recording  # type: ignore[method-assign]
    total = run_load(ref)
    assert len(states) == total + 1
    capacity = ref.profile.extended_area_size
    for n in range(total + 1):
        path = tmp_path / f"torn{n}.json"
        shutil.copy(base, path)
        card = VirtualCard.load(path)
        card.power_on()
        card.faults.tear_after = n
        assert run_load(card) == n
        assert snapshot(path) == states[n], f"tear after {n} APDUs"
        again = VirtualCard.load(path)
        again.power_on()
        files = snapshot(path)["load_files"]
        assert files in ([], [{"aid": AP.load_file.hex().upper(), "area": "extended",
                               "size": files[0]["size"] if files else 0,
                               "blocks": files[0]["blocks"] if files else 0,
                               "complete": bool(files and files[0]["complete"])}])
        session = open_scp(again)
        listed = read_registry(lambda c, s=session, k=again: secure(k, s, c),  # type: ignore[misc]
                               Scope.LOAD_FILES, tlv=again.profile.get_status_tlv)
        if files and not files[0]["complete"]:
            assert [(e.aid, e.lifecycle) for e in listed] == [(AP.load_file, 0x00)]
            assert secure(again, session, delete(AP.load_file, related=True)).sw == 0x9000
            ff21 = secure(again, session, get_data(0xFF21)).data
            assert ff21[5:13] == EXT
            assert ff21[21:25] == bytes(4)
            assert again.state.extended_area_used == 0
        elif files:
            assert [(e.aid, e.lifecycle) for e in listed] == [(AP.load_file, 0x01)]
            assert again.state.extended_area_used == files[0]["size"] <= capacity
        else:
            assert listed == []
