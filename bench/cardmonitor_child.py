"""Child process: pyscard's `CardMonitor` with an observer that prints each change.

Run with the stack's environment (PCSCLITE_CSOCK_NAME). Prints `ready` once observing,
then one line per card change: `+ <CLOCK_MONOTONIC ns> <reader>` for an inserted card,
`- <ns> <reader>` for a removed one. The timestamp is taken first thing in `update()`;
CLOCK_MONOTONIC is system-wide, so the parent compares it with its own clock. Stops
when stdin closes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from smartcard.CardMonitoring import CardMonitor, CardObserver


class PrintingObserver(CardObserver):  # type: ignore[misc]
    """Prints a timestamped line per added/removed card."""

    def update(self, observable: Any, handlers: Any) -> None:
        """Called by CardMonitor's thread on each change."""
        t = time.monotonic_ns()
        added, removed = handlers
        lines = [f"+ {t} {card.reader}" for card in added]
        lines += [f"- {t} {card.reader}" for card in removed]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


def main() -> int:
    """Observe until stdin reaches EOF."""
    monitor = CardMonitor()
    observer = PrintingObserver()
    monitor.addObserver(observer)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        sys.stdin.read()
    finally:
        monitor.deleteObserver(observer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
