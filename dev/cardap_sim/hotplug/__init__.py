"""The reader shim: vpcd behind an IFD handler that can play "unplugged" and a CCID
reader giving up on a mute card (READER_TIMEOUT frames become the driver's error).

`build_driver()` compiles `unplug_ifd.c` (a forwarding IFD handler, see its header) into
a shared object that pcscd loads instead of libifdvpcd.so. While the flag file exists the
driver answers IFD_NO_SUCH_DEVICE, which is what a CCID driver answers once its USB
device is gone: pcscd marks the reader unusable and sends itself its hotplug signal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("unplug_ifd.c")
FLAG_ENV = "CARDAP_SIM_UNPLUG_FLAG"
DRIVER_ENV = "CARDAP_SIM_VPCD_DRIVER"


def build_driver(out_dir: Path) -> Path:
    """Compile the driver into `out_dir` (once per source version); returns its path."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = out_dir / f"libifd-cardap-unplug-{digest}.so"
    if target.exists():
        return target
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler: apt-get install gcc (needed for the unpluggable "
                           "virtual reader)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-I/usr/include/PCSC",
                    "-o", str(tmp), str(SOURCE), "-ldl"], check=True, capture_output=True)
    tmp.replace(target)  # atomic: parallel builders never see a half-written file
    return target
