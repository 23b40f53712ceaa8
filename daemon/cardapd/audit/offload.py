"""Running the verification worker (`cardapd.audit.worker`) as a child process.

The child is the interpreter running the daemon (`sys.executable -m …`), so it finds the
same installed package. A cancel event (the daemon stopping, the client gone) or the
awaiting task being cancelled kills it; its stdout is one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from typing import Any

from cardapd.errors import Cancelled, StoreError

POLL_S = 0.1


async def run_worker(args: list[str], cancel: threading.Event | None = None) -> dict[str, Any]:
    """Run `python -m cardapd.audit.worker ARGS`; its JSON answer. StoreError when it
    reports one or fails; Cancelled when `cancel` is set first."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cardapd.audit.worker", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    talk = asyncio.ensure_future(proc.communicate())
    try:
        while True:
            done, _ = await asyncio.wait({talk}, timeout=POLL_S)
            if done:
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled("audit verification cancelled")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(BaseException):
            await asyncio.shield(talk)
        raise
    out, err = talk.result()
    try:
        answer: dict[str, Any] = json.loads(out.decode("utf-8", "replace") or "null") or {}
    except ValueError:
        answer = {}
    if proc.returncode != 0 or "error" in answer or not answer:
        message = answer.get("error") or err.decode("utf-8", "replace").strip()[-500:] \
            or f"exit status {proc.returncode}"
        raise StoreError(f"the audit verification worker failed: {message}")
    return answer
