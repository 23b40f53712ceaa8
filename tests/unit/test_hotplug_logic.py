"""Reader hotplug logic without a bus: udev device classification, the udev watch's
bookkeeping, and the monitor's unavailable/available transitions."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardap_sim.hotplug import udev_event
from cardapd.transport.monitor import MonitorEvent, MonitorEventKind, ReaderMonitor, ReaderStatus
from cardapd.transport.udev import UdevReaderWatch, UsbReader, ccid_reader, resolve_source

CCID = {"DEVTYPE": "usb_device", "ID_USB_INTERFACES": ":030000:0b0000:",
        "ID_VENDOR_ID": "072f", "ID_MODEL_ID": "2200", "ID_MODEL": "ACR122U_PICC",
        "ID_SERIAL_SHORT": "42"}


def test_a_device_with_a_ccid_interface_is_a_reader() -> None:
    reader = ccid_reader(CCID, "/sys/devices/x")
    assert reader == UsbReader("/sys/devices/x", "072f", "2200", "ACR122U PICC", "42")
    assert reader.describe() == "072f:2200 ACR122U PICC (serial 42)"


def test_other_devices_and_interfaces_are_not_readers() -> None:
    assert ccid_reader({**CCID, "ID_USB_INTERFACES": ":030101:080650:"}, "/sys/devices/x") is None
    assert ccid_reader({**CCID, "DEVTYPE": "usb_interface"}, "/sys/devices/x") is None
    assert ccid_reader({"DEVTYPE": "usb_device"}, "/sys/devices/x") is None


def test_hotplug_source_setting() -> None:
    assert resolve_source("udev", udev_running=False) == "udev"
    assert resolve_source("pnp", udev_running=True) == "pnp"
    assert resolve_source("auto", udev_running=True) == "udev"
    assert resolve_source("auto", udev_running=False) == "pnp"


@dataclass
class FakeDevice:
    action: str
    sys_path: str
    properties: dict[str, str] = field(default_factory=dict)


def test_udev_watch_reports_add_and_remove_of_readers_only() -> None:
    seen: list[tuple[str, str]] = []
    watch = UdevReaderWatch(lambda action, r: seen.append((action, r.sys_path)))
    watch._event(FakeDevice("add", "/sys/a", dict(CCID)))
    watch._event(FakeDevice("add", "/sys/mouse", {"DEVTYPE": "usb_device",
                                                  "ID_USB_INTERFACES": ":030102:"}))
    watch._event(FakeDevice("bind", "/sys/a", dict(CCID)))
    assert [r.sys_path for r in watch.present()] == ["/sys/a"]
    # a remove event may carry fewer properties: the reader is known by its path
    watch._event(FakeDevice("remove", "/sys/a", {"DEVTYPE": "usb_device"}))
    watch._event(FakeDevice("remove", "/sys/mouse", {}))
    assert seen == [("add", "/sys/a"), ("remove", "/sys/a")]
    assert watch.present() == []


def test_udev_message_layout() -> None:
    msg = udev_event.message({"SUBSYSTEM": "usb", "DEVTYPE": "usb_device", "ACTION": "add"})
    assert msg[:8] == b"libudev\0"
    assert msg[8:12] == bytes.fromhex("feedcafe")
    assert msg[40:].split(b"\0")[:3] == [b"SUBSYSTEM=usb", b"DEVTYPE=usb_device", b"ACTION=add"]
    # MurmurHash2, seed 0: pinned values (a real pyudev monitor filtering on subsystem
    # "usb" accepts these messages: tests/integration/test_hotplug.py)
    assert udev_event.murmur2(b"") == 0
    assert udev_event.murmur2(b"usb") == 0x577c5e5
    assert udev_event.murmur2(b"usb_device") == 0x27f8f50c


def _status(name: str, *, present: bool = False, unavailable: bool = False,
            count: int = 0) -> ReaderStatus:
    return ReaderStatus(name, present, False, unavailable, b"\x3b\x00" if present else b"",
                        count)


def test_unavailable_reader_is_reported_removed_then_added_with_its_card() -> None:
    events: list[MonitorEvent] = []
    mon = ReaderMonitor(events.append)
    mon._readers = {"R": _status("R", present=True, count=1)}
    mon._card_change(_status("R", unavailable=True, count=2))
    mon._card_change(_status("R", unavailable=True, count=3))  # still gone: nothing new
    mon._card_change(_status("R", present=True, count=4))
    kinds = [e.kind for e in events]
    assert kinds == [MonitorEventKind.CARD_REMOVED, MonitorEventKind.READER_REMOVED,
                     MonitorEventKind.READER_ADDED, MonitorEventKind.CARD_INSERTED]
    assert "unplugged" in events[1].detail


def test_empty_reader_going_unavailable_has_no_card_event() -> None:
    events: list[MonitorEvent] = []
    mon = ReaderMonitor(events.append)
    mon._readers = {"R": _status("R")}
    mon._card_change(_status("R", unavailable=True, count=1))
    mon._card_change(_status("R", count=2))
    assert [e.kind for e in events] == [MonitorEventKind.READER_REMOVED,
                                        MonitorEventKind.READER_ADDED]
