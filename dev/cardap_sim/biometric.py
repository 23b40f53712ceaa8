"""Bring up real fprintd on a private system bus, fed by libfprint's virtual_image sensor.

`PrivateBus` runs a dbus-daemon of type "system" in a temp dir, `Fprintd` runs
`/usr/libexec/fprintd -t` on it with the `virtual_image` driver only, and `VirtualSensor`
writes fingerprint images and control frames to the driver's socket. The images are the
alpha channel of the NIST PNGs (decoded here with the stdlib) and deterministic variants
(rotation, shift, blur, crop) derived from them in pure Python. Used by the tests and
`make run`; nothing here touches the machine's own system bus or /var/lib/fprint.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardap_sim.procs import tied

FPRINTD = Path("/usr/libexec/fprintd")
DBUS_DAEMON = "dbus-daemon"
PRINTS_DIR = Path(__file__).resolve().parent / "fingerprints"
"""The four NIST test prints carried in this package (see fingerprints/README.md)."""
PRINT_NAMES = ("arch", "loop-right", "tented_arch", "whorl")
FPRINT_NAME = "net.reactivated.Fprint"
MANAGER_PATH = "/net/reactivated/Fprint/Manager"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class GreyImage:
    """An 8-bit grey image, row-major, as virtual_image wants it."""

    width: int
    height: int
    pixels: bytes

    def frame(self) -> bytes:
        """The virtual_image frame: (width, height) then the grey bytes."""
        return struct.pack("ii", self.width, self.height) + self.pixels

    def at(self, x: int, y: int, fill: int) -> int:
        """The pixel at (x, y), or `fill` outside the image."""
        if 0 <= x < self.width and 0 <= y < self.height:
            return self.pixels[y * self.width + x]
        return fill


def _paeth(a: int, b: int, c: int) -> int:
    """The PNG Paeth predictor."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> bytearray:
    """Undo the PNG per-scanline filters (non-interlaced, 8-bit samples)."""
    stride = width * bpp
    out = bytearray(stride * height)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
            elif ftype != 0:
                raise ValueError(f"bad PNG filter type {ftype} in row {y}")
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return out


def read_print(path: Path) -> GreyImage:
    """The print in a PNG: its alpha channel (grey+alpha, RGBA) or its grey channel."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            header = body
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or interlace or channels is None:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour {colour})")
    px = _unfilter(zlib.decompress(bytes(idat)), width, height, channels)
    channel = channels - 1 if colour in (4, 6) else 0
    return GreyImage(width, height, bytes(px[channel::channels]))


def nist_print(name: str, directory: Path = PRINTS_DIR) -> GreyImage:
    """One of the four NIST test prints by name (arch, loop-right, tented_arch, whorl)."""
    return read_print(directory / f"{name}.png")


def background(img: GreyImage) -> int:
    """The most common value on the image border (the paper around the print)."""
    border = [img.at(x, y, 0) for x in range(img.width) for y in (0, img.height - 1)]
    border += [img.at(x, y, 0) for y in range(img.height) for x in (0, img.width - 1)]
    return max(set(border), key=border.count)


def rotated(img: GreyImage, degrees: float) -> GreyImage:
    """The image rotated about its centre (bilinear), same size, background filled."""
    fill = background(img)
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    cx, cy = (img.width - 1) / 2, (img.height - 1) / 2
    out = bytearray(img.width * img.height)
    for y in range(img.height):
        for x in range(img.width):
            sx = cos * (x - cx) + sin * (y - cy) + cx
            sy = -sin * (x - cx) + cos * (y - cy) + cy
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            top = img.at(x0, y0, fill) * (1 - fx) + img.at(x0 + 1, y0, fill) * fx
            bot = img.at(x0, y0 + 1, fill) * (1 - fx) + img.at(x0 + 1, y0 + 1, fill) * fx
            out[y * img.width + x] = round(top * (1 - fy) + bot * fy)
    return GreyImage(img.width, img.height, bytes(out))


def shifted(img: GreyImage, dx: int, dy: int) -> GreyImage:
    """The image moved by (dx, dy) pixels, same size, background filled."""
    fill = background(img)
    out = bytes(img.at(x - dx, y - dy, fill) for y in range(img.height)
                for x in range(img.width))
    return GreyImage(img.width, img.height, out)


def blurred(img: GreyImage) -> GreyImage:
    """The image under a 3x3 box blur (edges clamp)."""
    w, h, p = img.width, img.height, img.pixels
    out = bytearray(w * h)
    for y in range(h):
        rows = [max(0, min(h - 1, y + d)) * w for d in (-1, 0, 1)]
        for x in range(w):
            cols = (max(0, x - 1), x, min(w - 1, x + 1))
            out[y * w + x] = sum(p[r + c] for r in rows for c in cols) // 9
    return GreyImage(w, h, bytes(out))


def cropped(img: GreyImage, left: int, top: int, right: int, bottom: int) -> GreyImage:
    """The image with the given margins cut off (a smaller frame)."""
    w, h = img.width - left - right, img.height - top - bottom
    rows = (img.pixels[(top + y) * img.width + left:(top + y) * img.width + left + w]
            for y in range(h))
    return GreyImage(w, h, b"".join(rows))


def variants(img: GreyImage) -> list[GreyImage]:
    """Eight deterministic, slightly different captures of the same finger."""
    return [
        rotated(img, 3.0), rotated(img, -4.0), shifted(img, 6, -4), shifted(img, -5, 7),
        blurred(img), cropped(img, 8, 6, 4, 10), blurred(rotated(img, 2.0)),
        shifted(rotated(img, -2.0), 3, 3),
    ]


def write_pgm(img: GreyImage, path: Path) -> Path:
    """Save an image as binary PGM (for a person to look at a variant)."""
    path.write_bytes(b"P5\n%d %d\n255\n" % (img.width, img.height) + img.pixels)
    return path


# --------------------------------------------------------------------------- processes


def _wait(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until true or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[bytes] | None, sig_kill: bool = False) -> None:
    """Terminate (or kill) one process we started and reap it."""
    if proc is None or proc.poll() is not None:
        return
    if sig_kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=3)


class PrivateBus:
    """A private dbus-daemon of type "system", allowing every user, in its own directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket_path = directory / "bus"
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the bus; return its address (`unix:path=…`)."""
        conf = self.directory / "bus.conf"
        conf.write_text(BUS_CONFIG.format(path=self.socket_path))
        self._proc = subprocess.Popen(
            tied([DBUS_DAEMON, f"--config-file={conf}", "--nofork", "--print-address=1"]),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError("dbus-daemon exited without printing its address")
        self.address = line.split(",")[0]
        return self.address

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The dbus-daemon process (None before `start`)."""
        return self._proc

    def stop(self) -> None:
        """Stop the bus."""
        _stop(self._proc)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


POLKIT_NAME = "org.freedesktop.PolicyKit1"


def fprint_actions(action_id: str) -> bool:
    """The default grant: every fprintd action, nothing else."""
    return action_id.startswith("net.reactivated.fprint.")


class PolkitAuthority:
    """A stand-in polkit authority on the private bus: answers CheckAuthorization by rule.

    fprintd asks polkit for every Claim (also for root callers); on a private bus with no
    polkitd it would refuse everything. This grants by `allow(action_id)` for any uid.
    """

    def __init__(self, bus_address: str,
                 allow: Callable[[str], bool] = fprint_actions) -> None:
        self.bus_address = bus_address
        self.allow = allow
        self.checked: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def start(self) -> None:
        """Own the polkit name and serve in a thread."""
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        self._conn = open_dbus_connection(self.bus_address)
        reply = self._conn.send_and_get_reply(message_bus.RequestName(POLKIT_NAME, 4),
                                              timeout=5)
        if reply.body != (1,):
            raise RuntimeError(f"could not own {POLKIT_NAME}: {reply.body}")
        self._thread = threading.Thread(target=self._serve, name="polkit-mock", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Answer method calls until stopped."""
        while not self._stop.is_set():
            try:
                msg = self._conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except (OSError, EOFError):
                return
            reply = self._answer(msg)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(reply)

    def _answer(self, msg: Any) -> Any:
        """The reply to one message (None for signals and the like)."""
        from jeepney import HeaderFields, MessageType
        from jeepney.wrappers import new_error, new_method_return

        if msg.header.message_type != MessageType.method_call:
            return None
        member = msg.header.fields.get(HeaderFields.member)
        if member == "CheckAuthorization":
            action = str(msg.body[1])
            self.checked.append(action)
            return new_method_return(msg, "(bba{ss})", ((self.allow(action), False, {}),))
        if member == "GetAll":
            return new_method_return(msg, "a{sv}", ({},))
        if member in ("RegisterAuthenticationAgent", "UnregisterAuthenticationAgent",
                      "CancelCheckAuthorization"):
            return new_method_return(msg)
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod")

    def stop(self) -> None:
        """Stop serving and drop the connection (the name goes with it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._conn is not None:
            self._conn.close()


def _default_device(address: str) -> str | None:
    """The default device's object path, or None if fprintd does not answer (yet)."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    mgr = DBusAddress(MANAGER_PATH, FPRINT_NAME, f"{FPRINT_NAME}.Manager")
    try:
        with open_dbus_connection(address) as conn:
            reply = conn.send_and_get_reply(new_method_call(mgr, "GetDefaultDevice"),
                                            timeout=1.0)
    except (OSError, TimeoutError):
        return None
    if reply.header.message_type.name != "method_return":
        return None
    return str(reply.body[0])


class Fprintd:
    """The real fprintd (`-t`: no idle exit) on a private bus with the virtual_image driver."""

    def __init__(self, bus_address: str, directory: Path) -> None:
        self.bus_address = bus_address
        self.directory = directory
        self.sensor_path = directory / "vimg.sock"
        self.state_dir = directory / "state"
        self.runtime_dir = directory / "runtime"
        self.log_path = directory / "fprintd.log"
        self.device_path = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The fprintd process (None before `start`)."""
        return self._proc

    @property
    def pid(self) -> int | None:
        """The running fprintd's pid."""
        return None if self._proc is None or self._proc.poll() is not None else self._proc.pid

    def start(self, timeout: float = 10.0) -> str:
        """Start fprintd, wait until `GetDefaultDevice` answers, return the device path."""
        self.state_dir.mkdir(exist_ok=True)
        self.runtime_dir.mkdir(exist_ok=True)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address,
                   FP_VIRTUAL_IMAGE=str(self.sensor_path),
                   FP_DRIVERS_WHITELIST="virtual_image",
                   STATE_DIRECTORY=str(self.state_dir),
                   RUNTIME_DIRECTORY=str(self.runtime_dir),
                   G_MESSAGES_DEBUG="all")
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(tied([str(FPRINTD), "-t"]), env=env, umask=0,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        found: list[str] = []

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"fprintd exited; see {self.log_path}")
            path = _default_device(self.bus_address)
            if path:
                found.append(path)
            return bool(path)

        _wait(ready, timeout, "fprintd's default device")
        self.device_path = found[0]
        return self.device_path

    def kill(self) -> None:
        """SIGKILL fprintd (a crash), and reap it."""
        _stop(self._proc, sig_kill=True)

    def stop(self) -> None:
        """Stop fprintd cleanly."""
        _stop(self._proc)

    def restart(self) -> str:
        """Kill and start again (same state directory: enrolled prints survive)."""
        self.kill()
        return self.start()


class VirtualSensor:
    """A client of virtual_image's socket: images and control frames."""

    RETRY, ERROR, AUTO_FINGER, FINGER, UNPLUG = -1, -2, -3, -4, -5

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    def _connect(self, timeout: float) -> socket.socket:
        """Connect (waiting for the driver to listen: it does once the device is open)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def send(self, frame: bytes, timeout: float = 5.0) -> None:
        """Write one frame, connecting (or reconnecting once) as needed."""
        for attempt in (0, 1):
            if self._sock is None:
                self._sock = self._connect(timeout)
            try:
                self._sock.sendall(frame)
                return
            except OSError:
                self.close()
                if attempt:
                    raise

    def image(self, img: GreyImage) -> None:
        """Present a finger: the driver captures this image."""
        self.send(img.frame())

    def retry(self, code: int = 0) -> None:
        """Make the driver report a retry (0 too short, 1 centre, 3 remove …)."""
        self.send(struct.pack("ii", self.RETRY, code))

    def error(self, code: int = 0) -> None:
        """Make the driver report an error (FpDeviceError code)."""
        self.send(struct.pack("ii", self.ERROR, code))

    def finger(self, present: bool) -> None:
        """Put the finger on (True) or take it off (False)."""
        self.send(struct.pack("ii", self.FINGER, int(not present)))

    def auto_finger(self, on: bool) -> None:
        """Switch the driver's automatic finger on/off around each image."""
        self.send(struct.pack("ii", self.AUTO_FINGER, int(on)))

    def unplug(self) -> None:
        """Unplug the sensor: fprintd loses the device."""
        self.send(struct.pack("ii", self.UNPLUG, 0))

    def close(self) -> None:
        """Drop the connection (the driver accepts a new one later)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


@dataclass
class BiometricStack:
    """A running private bus + fprintd + virtual sensor."""

    directory: Path
    bus: PrivateBus
    polkit: PolkitAuthority
    fprintd: Fprintd
    sensor: VirtualSensor

    @property
    def bus_address(self) -> str:
        """The private bus's address (export as DBUS_SYSTEM_BUS_ADDRESS)."""
        return self.bus.address

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        """The processes of this stack, by name."""
        return {"dbus-daemon": self.bus.proc, "fprintd": self.fprintd.proc}


@contextlib.contextmanager
def biometric_stack(directory: Path | None = None) -> Iterator[BiometricStack]:
    """Bring up bus + fprintd + sensor; tear everything down on exit."""
    if not FPRINTD.exists():
        raise FileNotFoundError(f"{FPRINTD} is not installed (apt-get install fprintd)")
    owned = directory is None
    root = Path(tempfile.mkdtemp(prefix="cardap-fp-")) if directory is None else directory
    os.chmod(root, 0o755)  # noqa: S103 - a non-root daemon must reach the bus socket
    bus = PrivateBus(root)
    polkit: PolkitAuthority | None = None
    fprintd: Fprintd | None = None
    sensor: VirtualSensor | None = None
    try:
        address = bus.start()
        polkit = PolkitAuthority(address)
        polkit.start()
        fprintd = Fprintd(address, root)
        fprintd.start()
        sensor = VirtualSensor(fprintd.sensor_path)
        yield BiometricStack(root, bus, polkit, fprintd, sensor)
    finally:
        if sensor is not None:
            sensor.close()
        if fprintd is not None:
            fprintd.stop()
        if polkit is not None:
            polkit.stop()
        bus.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Run the stack until interrupted, printing the bus address (for `make run`)."""
    with biometric_stack() as stack:
        print(f"DBUS_SYSTEM_BUS_ADDRESS={stack.bus_address}", flush=True)
        print(f"FP_VIRTUAL_IMAGE={stack.fprintd.sensor_path}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while stack.fprintd.pid is not None:
                time.sleep(0.5)


if __name__ == "__main__":
    main()
