"""Broadcast a udev event the way udevd does, for a USB reader that is not there.

udevd announces each processed device on the NETLINK_KOBJECT_UEVENT socket, multicast
group 2, as a "libudev" message: a fixed header, then the device's properties as
NUL-separated KEY=value strings. Every libudev monitor (pyudev included) receives it as a
real event. This lets tests plug a CCID reader into the daemon's udev watch on a machine
with no USB bus. Root only (the kernel checks the sender; libudev ignores non-root ones).
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Mapping

NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2
UDEV_MONITOR_MAGIC = 0xFEEDCAFE
HEADER_SIZE = 40
_seq = itertools.count(1_000_000)


def murmur2(data: bytes, seed: int = 0) -> int:
    """MurmurHash2 (32-bit), which libudev uses for its in-kernel subsystem filter."""
    m, h = 0x5BD1E995, (seed ^ len(data)) & 0xFFFFFFFF
    full = len(data) - len(data) % 4
    for (k,) in struct.iter_unpack("<I", data[:full]):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = data[full:]
    if rest:
        for i, byte in reversed(list(enumerate(rest))):
            h ^= byte << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def message(properties: Mapping[str, str]) -> bytes:
    """The libudev netlink message for a device with `properties`."""
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in properties.items())
    subsystem = properties.get("SUBSYSTEM", "").encode()
    devtype = properties.get("DEVTYPE", "").encode()
    header = (b"libudev\0" + struct.pack(">I", UDEV_MONITOR_MAGIC)
              + struct.pack("<III", HEADER_SIZE, HEADER_SIZE, len(body))
              # the filter hashes are in network order (the kernel's BPF filter reads them)
              + struct.pack(">IIII", murmur2(subsystem) if subsystem else 0,
                            murmur2(devtype) if devtype else 0, 0, 0))
    return header + body


def ccid_reader_properties(action: str, *, name: str = "cardap-test-reader",
                           vendor_id: str = "ffff", product_id: str = "0ccd",
                           model: str = "Test_CCID_Reader", serial: str = "0001"
                           ) -> dict[str, str]:
    """Properties of a USB CCID reader (an unassigned vendor id: no driver claims it)."""
    return {
        "ACTION": action, "DEVPATH": f"/devices/virtual/cardap/{name}",
        "SUBSYSTEM": "usb", "DEVTYPE": "usb_device", "SEQNUM": str(next(_seq)),
        "ID_VENDOR_ID": vendor_id, "ID_MODEL_ID": product_id, "ID_MODEL": model,
        "ID_SERIAL_SHORT": serial, "ID_USB_INTERFACES": ":0b0000:",
    }


def broadcast(properties: Mapping[str, str]) -> None:
    """Send one udev event to every udev monitor on this machine."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT) as sock:
        sock.bind((0, 0))
        sock.sendto(message(properties), (0, UDEV_GROUP))
