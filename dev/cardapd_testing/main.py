"""TEST-ONLY daemon entry point: cardapd with `test:` operator sessions.

`python -m cardapd_testing.main --config FILE` runs exactly what `cardapd` runs, except
that the operator session provider accepts test tokens (`cardapd_testing.sessions`) and,
when `CARDAPD_TEST_CLOCK_FILE` names a file, the audit log's clock runs that many seconds
ahead of the wall clock (`cardapd_testing.clock`: days and years pass in a test). It is not
a console script, no configuration key selects it, and the systemd unit runs `cardapd`;
see docs/decisions.md (D14).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from cardapd.config import load_config
from cardapd.errors import CardapError, ConfigError
from cardapd.main import DEFAULT_CONFIG, parse_args
from cardapd.telemetry.logsetup import setup_logging
from cardapd_testing.clock import CLOCK_ENV, FileClock
from cardapd_testing.sessions import TestOperatorSessions


def main(argv: list[str] | None = None) -> int:
    """Run the daemon with test operator sessions; returns the exit code."""
    args = parse_args(argv)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"cardapd (testing): invalid configuration: {exc.message}", file=sys.stderr)
        return 2
    if args.check_config:
        return 0
    setup_logging(args.log_level or cfg.daemon.log_level, args.log_format or cfg.daemon.log_format)
    log = logging.getLogger("cardapd")
    log.warning("TEST-ONLY entry point: operator sessions are test tokens; never run this "
                "on a terminal")
    from cardapd.daemon import Daemon
    try:
        daemon = Daemon(cfg, path, operator_sessions=TestOperatorSessions())
        clock_file = os.environ.get(CLOCK_ENV)
        if clock_file:
            log.warning("TEST-ONLY: the audit clock follows %s", clock_file)
            daemon.audit_clock = FileClock(Path(clock_file))
        return asyncio.run(daemon.run())
    except CardapError as exc:
        log.error("cardapd failed: %s (%s)", exc.message, exc.reason)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
