"""Child processes of the stack harness that never outlive it.

Every process the harness starts (pcscd, the simulator, the loading service, dbus-daemon,
fprintd, cardapd) runs in a session of its own, so a Ctrl-C at the terminal reaches only
the harness, which then stops them in order (the daemon first, so that it audits its
stop). Should the harness itself die without stopping them (SIGKILL, a crash), the kernel
sends each of them SIGTERM: they are started through `setpriv --pdeathsig TERM`, which
sets PR_SET_PDEATHSIG and then execs the real command (the setting survives exec).

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it is set only
for children started from the main thread (a worker thread may come and go).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Sequence

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def tied(cmd: Sequence[str]) -> list[str]:
    """`cmd`, prefixed so that it gets SIGTERM when this process dies."""
    if threading.current_thread() is not threading.main_thread():
        return list(cmd)
    return [SETPRIV, "--pdeathsig", "TERM", "--", *cmd]


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate `proc` and reap it (SIGKILL when it does not exit within `timeout`)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
