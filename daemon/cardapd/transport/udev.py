"""USB reader hotplug through udev (pyudev), beside PC/SC's PnP notification.

pcscd learns of USB readers from udev and tells its clients through the PnP pseudo-reader,
which the reader monitor already watches. Watching udev as well gives two things: the
monitor relists at once on a udev event (a pcscd without PnP support would otherwise only
notice on the next poll), and the daemon knows which CCID devices are plugged in, so a
diagnosis can tell "a reader is plugged in but pcscd does not offer it" (driver or
permission problem) from "no reader at all". Where udevd does not run, PnP alone is used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CCID_INTERFACE_CLASS = "0b"  # USB interface class of smart-card readers (CCID)
UDEV_CONTROL = Path("/run/udev/control")  # exists while udevd runs


@dataclass(frozen=True)
class UsbReader:
    """A USB device with a CCID interface, as udev describes it."""

    sys_path: str
    vendor_id: str = ""
    product_id: str = ""
    model: str = ""
    serial: str = ""

    def describe(self) -> str:
        """`vendor:product model (serial)` for logs and diagnoses."""
        text = f"{self.vendor_id or '?'}:{self.product_id or '?'}"
        if self.model:
            text += f" {self.model}"
        if self.serial:
            text += f" (serial {self.serial})"
        return text


def ccid_reader(properties: Mapping[str, str], sys_path: str) -> UsbReader | None:
    """The reader a udev `usb_device` describes, or None when it has no CCID interface.

    udev's usb_id builtin lists a device's interfaces in ID_USB_INTERFACES as
    `:ccsspp:ccsspp:` (class, subclass, protocol in hex); CCID is class 0b.
    """
    if properties.get("DEVTYPE") != "usb_device":
        return None
    interfaces = [i for i in properties.get("ID_USB_INTERFACES", "").split(":") if i]
    if not any(i[:2].lower() == CCID_INTERFACE_CLASS for i in interfaces):
        return None
    return UsbReader(sys_path=sys_path,
                     vendor_id=properties.get("ID_VENDOR_ID", ""),
                     product_id=properties.get("ID_MODEL_ID", ""),
                     model=properties.get("ID_MODEL", "").replace("_", " "),
                     serial=properties.get("ID_SERIAL_SHORT", ""))


def resolve_source(setting: str, *, udev_running: bool | None = None) -> str:
    """`udev` or `pnp` for the `[pcsc] hotplug` setting (`auto`: udev when udevd runs)."""
    if setting in ("udev", "pnp"):
        return setting
    running = UDEV_CONTROL.exists() if udev_running is None else udev_running
    return "udev" if running else "pnp"


class UdevReaderWatch:
    """Tracks plugged-in CCID readers from udev events, in pyudev's observer thread.

    `on_change(action, reader)` runs in that thread for every CCID reader added ("add")
    or removed ("remove"); it must hand work over to the event loop itself.
    """

    def __init__(self, on_change: Callable[[str, UsbReader], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._present: dict[str, UsbReader] = {}
        self._observer: Any = None

    def start(self) -> None:
        """Enumerate the readers already plugged in, then follow udev's events."""
        import pyudev  # imported here: pnp-only deployments never load libudev

        context = pyudev.Context()
        for device in context.list_devices(subsystem="usb", DEVTYPE="usb_device"):
            reader = ccid_reader(device.properties, device.sys_path)
            if reader is not None:
                with self._lock:
                    self._present[reader.sys_path] = reader
        monitor = pyudev.Monitor.from_netlink(context, source="udev")
        monitor.filter_by(subsystem="usb", device_type="usb_device")
        self._observer = pyudev.MonitorObserver(monitor, callback=self._event,
                                                name="udev-readers")
        self._observer.start()
        log.info("reader hotplug: udev (%d CCID reader(s) plugged in) and PC/SC PnP",
                 len(self.present()))

    def present(self) -> list[UsbReader]:
        """CCID readers plugged in right now, by sys path."""
        with self._lock:
            return [self._present[k] for k in sorted(self._present)]

    def _event(self, device: Any) -> None:
        action = device.action
        if action not in ("add", "remove"):
            return
        try:
            found = ccid_reader(device.properties, device.sys_path)
            with self._lock:
                if action == "add" and found is not None:
                    self._present[found.sys_path] = found
                    reader: UsbReader | None = found
                else:
                    # A remove event may carry fewer properties: we know it by its path.
                    reader = self._present.pop(device.sys_path, None) if action == "remove" \
                        else None
            if reader is not None:
                self._on_change(action, reader)
        except Exception:  # a bad event must not end the observer thread
            log.exception("udev event for %s could not be handled", device.sys_path)

    def stop(self) -> None:
        """Stop following udev."""
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
