"""GP command builders: exact bytes, LOAD block splitting and the bytes it costs on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardlib.gp.commands import (
    StoreDataEncryption,
    StoreDataOptions,
    StoreDataStructure,
    bytes_sent,
    delete,
    dgi,
    get_data,
    install_for_install,
    install_for_load,
    install_parameters,
    load_commands,
    load_file_data_block,
    load_parameters,
    max_block_size,
    minimum_bytes,
    select,
    store_data,
    store_data_commands,
)
from cardlib.gp.scp03 import SecurityLevel, wrapped_length

h = bytes.fromhex
ISD = h("A000000151000000")
PKG = h("D392F0004301")
MOD = h("D392F000430101")
APP = h("D392F00043010001")


def test_install_for_load_bytes() -> None:
    cmd = install_for_load(PKG, ISD, parameters=load_parameters(nv_code=0x1234))
    assert cmd.encode() == h("80E6020019" "06D392F0004301" "08A000000151000000" "00"
                             "06EF04C6021234" "00" "00")


def test_install_for_load_minimal() -> None:
    assert install_for_load(PKG).encode() == h("80E602000B06D392F00043010000000000")


def test_install_for_install_bytes() -> None:
    cmd = install_for_install(PKG, MOD, APP, parameters=install_parameters(b"\x01\x02"))
    assert cmd.encode() == h("80E60C0020" "06D392F0004301" "07D392F000430101"
                             "08D392F00043010001" "0100" "04C9020102" "00" "00")


def test_install_for_install_default_parameters_are_empty_c9() -> None:
    assert install_for_install(PKG, MOD, APP).data.endswith(h("0100" "02C900" "00"))


def test_delete_bytes() -> None:
    assert delete(APP).encode() == h("80E400000A4F08D392F0004301000100")
    assert delete(PKG, related=True).encode() == h("80E40080084F06D392F000430100")


def test_get_data_and_select_bytes() -> None:
    assert get_data(0x9F7F).encode() == h("80CA9F7F00")
    assert get_data(0x66).encode() == h("80CA006600")
    assert select(ISD).encode() == h("00A4040C08A000000151000000")
    assert select(ISD, fci=True).encode() == h("00A4040008A00000015100000000")


def test_store_data_p1_coding() -> None:
    enc = StoreDataOptions(StoreDataStructure.DGI, StoreDataEncryption.ENCRYPTED)
    assert store_data(b"\x01", 3, last=True, options=enc).encode() == h("80E2E8030101" "00")
    assert store_data(b"\x01", 0, last=False).encode() == h("80E20800010100")
    tlv = StoreDataOptions(StoreDataStructure.BER_TLV)
    assert store_data(b"\x01", 1, last=True, options=tlv).p1 == 0x90


def test_store_data_sequence() -> None:
    cmds = store_data_commands(bytes(500), 200)
    assert [(c.p1, c.p2, len(c.data)) for c in cmds] == [(0x08, 0, 200), (0x08, 1, 200),
                                                          (0x88, 2, 100)]


def test_dgi_encoding() -> None:
    assert dgi(0x0101, b"\xaa\xbb") == h("010102AABB")
    assert dgi(0x8000, bytes(300))[:5] == h("8000FF012C")


def test_load_file_data_block_wraps_in_c4() -> None:
    assert load_file_data_block(b"\x01" * 3) == h("C403010101")
    assert load_file_data_block(bytes(200))[:3] == h("C481C8")


@pytest.mark.parametrize(("max_cmd", "level", "size"), [
    (239, SecurityLevel(0x33), 223),  # vendor-a: 239 - 8 MAC -> 231 -> 14 blocks -> 224 - 1
    (255, SecurityLevel(0x33), 239),  # vendor-b
    (239, SecurityLevel(0x11), 231),
    (255, SecurityLevel(0x01), 247),
    (239, None, 239),
])
def test_max_block_size(max_cmd: int, level: SecurityLevel | None, size: int) -> None:
    assert max_block_size(max_cmd, level) == size
    if level is not None:
        assert wrapped_length(size, level) <= max_cmd
        assert wrapped_length(size + 1, level) > max_cmd


def test_load_blocks_numbering_and_last_flag() -> None:
    data = load_file_data_block(bytes(range(256)) * 4)
    cmds = load_commands(data, 223)
    assert [c.p2 for c in cmds] == list(range(len(cmds)))
    assert [c.p1 for c in cmds] == [0x00] * (len(cmds) - 1) + [0x80]
    assert all(len(c.data) == 223 for c in cmds[:-1])
    assert b"".join(c.data for c in cmds) == data
    assert cmds[0].encode()[:5] == h("80E80000DF")


def test_load_of_exactly_one_block() -> None:
    [cmd] = load_commands(bytes(10), 223)
    assert (cmd.p1, cmd.p2) == (0x80, 0x00)


def test_too_many_blocks_refused() -> None:
    with pytest.raises(ValueError, match="block number"):
        load_commands(bytes(257 * 10), 10)


def test_bytes_sent_is_exact() -> None:
    cmds = load_commands(bytes(500), 223)  # 223 + 223 + 54
    # each: 4 header + Lc + wrapped data + Le;  wrapped: 224+8, 224+8, 64+8
    assert bytes_sent(cmds, SecurityLevel(0x33)) == (4 + 1 + 232 + 1) * 2 + (4 + 1 + 72 + 1)
    assert bytes_sent(cmds, None) == (4 + 1 + 223 + 1) * 2 + (4 + 1 + 54 + 1)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 30000), max_cmd=st.sampled_from([239, 255]),
       level=st.sampled_from([0x01, 0x03, 0x11, 0x13, 0x33]))
def test_load_overhead_is_within_5_percent_of_minimum(size: int, max_cmd: int,
                                                      level: int) -> None:
    lvl = SecurityLevel(level)
    data = load_file_data_block(bytes(size))
    block = max_block_size(max_cmd, lvl)
    if -(-len(data) // block) > 256:
        return
    cmds = load_commands(data, block)
    sent = bytes_sent(cmds, lvl)
    assert all(wrapped_length(len(c.data), lvl) <= max_cmd for c in cmds)
    minimum = minimum_bytes(len(data), max_cmd, lvl)
    assert sent <= 1.05 * minimum
    assert sent == minimum  # greedy full blocks reach the bound exactly


@pytest.mark.parametrize("bad", [b"", b"\x01" * 4, b"\x01" * 17])
def test_bad_aids_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="5-16"):
        delete(bad)
    with pytest.raises(ValueError, match="5-16"):
        install_for_install(PKG, MOD, bad)
