"""TEST-ONLY daemon entry point: cardapd with `test:` operator sessions.

`python -m cardapd_testing.main --config FILE` runs exactly what `cardapd` runs, except
that the operator session provider accepts test tokens (`cardapd_testing.sessions`). It
is not a console script, no configuration key selects it, and the systemd unit runs
`cardapd`; see docs/decisions.md (D14).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from cardapd.config import load_config
from cardapd.errors import CardapError, ConfigError
from cardapd.main import DEFAULT_CONFIG, parse_args
from cardapd.telemetry.logsetup import setup_logging
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
        return asyncio.run(Daemon(cfg, path, operator_sessions=TestOperatorSessions()).run())
    except CardapError as exc:
        log.error("cardapd failed: %s (%s)", exc.message, exc.reason)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
