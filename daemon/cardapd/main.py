"""`cardapd` entry point: parse arguments, load the configuration, run the daemon.

Exit codes: 0 stopped cleanly (`--check-config`: valid), 2 invalid configuration or
arguments, 1 failed at run time; `--check-config` only: 3 valid, but a file it names for
the loading link is missing or unusable (the daemon would start with the link down).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cardap.clihelp import localize
from cardap.i18n import from_environment, tr
from cardapd import __version__
from cardapd.config import load_config
from cardapd.config.files import SERVICE_USER, loading_tls_problems
from cardapd.errors import CardapError, ConfigError
from cardapd.telemetry.logsetup import setup_logging

DEFAULT_CONFIG = Path("/etc/cardapd/cardapd.toml")


EXIT_CHECK_FILES = 3


def build_parser(language: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, its help in `language` (default: the user's, from LANGUAGE,
    LC_ALL, LC_MESSAGES, LANG); `manual_parser` forces English for cardapd(8)."""
    la = from_environment() if language is None else language
    p = argparse.ArgumentParser(
        prog="cardapd",
        description=tr(la, "The daemon of My Number Card AP loading terminals (kiosks) and "
                       "gates: it owns the IC card reader through pcscd and serves kiosk, "
                       "gate and operations clients over local gRPC sockets. Run by systemd "
                       "(cardapd.service); SIGHUP reloads the configuration, SIGTERM stops "
                       "after the card writes in progress."),
        epilog=tr(la, "cardapd bootstrap-admin --organisation ORG --operator ID …: appoint "
                  "the first administrator of an organisation (run as root on the terminal; "
                  "cardapd bootstrap-admin --help)"))
    p.add_argument("--config", type=Path, default=None,
                   help=tr(la, "configuration file (default {path} if it exists)",
                           path=DEFAULT_CONFIG))
    p.add_argument("--check-config", action="store_true",
                   help=tr(la, "validate the configuration and the loading link's TLS files, "
                           "then exit: 0 valid, 2 invalid, 3 valid but a TLS file is missing "
                           "or unreadable (as root: also by the user {user})",
                           user=SERVICE_USER))
    p.add_argument("--log-level", choices=["traffic", "debug", "info", "warning", "error"],
                   help=tr(la, "override [daemon] log_level"))
    p.add_argument("--log-format", choices=["json", "text"],
                   help=tr(la, "override [daemon] log_format"))
    p.add_argument("--version", action="version", version=f"cardapd {__version__}",
                   help=tr(la, "print cardapd's version and exit"))
    return localize(p, la)


def manual_parser() -> argparse.ArgumentParser:
    """The parser of the English manual page cardapd(8): English whatever the locale of the
    machine that builds it (`make man`, the Debian build)."""
    return build_parser("en")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the daemon; returns the exit code."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["bootstrap-admin"]:
        from cardapd.bootstrap_admin import main as bootstrap_main
        return bootstrap_main(args_list[1:])
    args = parse_args(argv)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"cardapd: invalid configuration: {exc.message}", file=sys.stderr)
        return 2
    if args.check_config:
        problems = loading_tls_problems(cfg.loading, as_user=SERVICE_USER)
        if problems:
            print(f"cardapd: configuration {path or '(defaults)'} is valid, but the loading "
                  "link cannot be set up (the daemon would start with it down):",
                  file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_CHECK_FILES
        print(f"cardapd: configuration {path or '(defaults)'} is valid")
        return 0
    target = setup_logging(args.log_level or cfg.daemon.log_level,
                           args.log_format or cfg.daemon.log_format)
    logging.getLogger("cardapd").debug("logging to %s", target)
    from cardapd.daemon import Daemon  # after logging is set up
    try:
        return asyncio.run(Daemon(cfg, path).run())
    except CardapError as exc:
        logging.getLogger("cardapd").error("cardapd failed: %s (%s)", exc.message, exc.reason)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
