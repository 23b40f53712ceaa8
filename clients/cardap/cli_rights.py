"""cardapctl's commands for what each organisation allows its operators at this terminal:
`rights show|set` (the APs they may load and delete) and `presets list|set|delete|default`
(the preset sets and the default preset). Changes need an administrator session of the
organisation (--session-file); showing needs only the ops socket."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cardap import clibase
from cardap.cli_cards import fmt_preset
from cardap.clibase import EXIT_OK, emit, lang
from cardap.client import CardapClient
from cardap.i18n import N_, tr
from cardap.v1 import terminal_pb2

DEFAULT_ROLE = {"rights": "ops", "presets": "ops"}


def ap_list(text: str) -> list[str]:
    """`a,b,c` → ["a", "b", "c"] (argparse type; empty items dropped)."""
    return [a.strip() for a in text.split(",") if a.strip()]


def fmt_rights(r: terminal_pb2.OrganisationRights) -> str:
    """An organisation's rights as lines."""
    la = lang()
    if r.restricted:
        lines = [tr(la, "{organisation}: operators may load {aps}", organisation=r.organisation,
                    aps=", ".join(r.load_ap_ids) or tr(la, "nothing")),
                 tr(la, "{organisation}: operators may delete {aps}",
                    organisation=r.organisation,
                    aps=", ".join(r.delete_ap_ids) or tr(la, "nothing"))]
    else:
        lines = [tr(la, "{organisation}: operators may load and delete every AP of the "
                    "organisation's catalogue at the loading service (not restricted)",
                    organisation=r.organisation)]
    lines += [fmt_preset(la, p, r.default_preset) for p in r.presets]
    if not r.default_preset:
        lines.append(tr(la, "no default preset"))
    return "\n".join(lines)


def cmd_rights(client: CardapClient, args: argparse.Namespace) -> int:
    if args.rights_command == "show":
        result = client.organisation_rights(args.org)
    elif args.unrestricted:
        result = client.set_organisation_aps(args.org, unrestricted=True)
    else:
        result = client.set_organisation_aps(args.org, load=args.load, delete=args.delete)
    emit(args, result, fmt_rights)
    return EXIT_OK


def cmd_presets(client: CardapClient, args: argparse.Namespace) -> int:
    command = args.presets_command
    if command == "list":
        result = client.organisation_rights(args.org)
    elif command == "set":
        result = client.set_preset(args.org, args.name, args.aps, make_default=args.default)
    elif command == "delete":
        result = client.set_preset(args.org, args.name, [])
    else:  # default
        result = client.set_default_preset(args.org, "" if args.none else args.name)
    emit(args, result, fmt_rights)
    return EXIT_OK


COMMANDS: dict[str, Callable[[CardapClient, argparse.Namespace], int]] = {
    "rights": cmd_rights, "presets": cmd_presets,
}


def add_parsers(sub: Any, common: argparse.ArgumentParser, la: str) -> None:
    """Add `rights` and `presets` to cardapctl's subparsers, their help in language `la`."""
    def command(parent: Any, name: str, help_id: str,
                parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return clibase.command(parent, name, help_id, parents, la)

    org = argparse.ArgumentParser(add_help=False, parents=[common])
    org.add_argument("--org", required=True, metavar="ORG",
                     help=tr(la, "the organisation (as in [operators.organisations])"))

    ri = command(sub, "rights", N_("the APs an organisation's operators may load and delete "
                                   "(ops; changes need an administrator's session)"), [common])
    rsub = ri.add_subparsers(dest="rights_command", required=True, metavar="COMMAND")
    command(rsub, "show", N_("show the organisation's rights and presets"), [org])
    rs = command(rsub, "set", N_("restrict the operators to these APs (catalogue ids)"), [org])
    rs.add_argument("--load", type=ap_list, default=[], metavar="AP,AP",
                    help=tr(la, "the APs they may load"))
    rs.add_argument("--delete", type=ap_list, default=[], metavar="AP,AP",
                    help=tr(la, "the APs they may delete"))
    rs.add_argument("--unrestricted", action="store_true",
                    help=tr(la, "instead: every AP of the organisation's catalogue"))

    pr = command(sub, "presets", N_("an organisation's preset sets and default preset (ops; "
                                    "changes need an administrator's session)"), [common])
    psub = pr.add_subparsers(dest="presets_command", required=True, metavar="COMMAND")
    command(psub, "list", N_("the organisation's preset sets"), [org])
    ps = command(psub, "set", N_("create or replace a preset set"), [org])
    ps.add_argument("--name", required=True, metavar="NAME", help=tr(la, "the preset set's name"))
    ps.add_argument("--aps", type=ap_list, required=True, metavar="AP,AP",
                    help=tr(la, "the APs in load order"))
    ps.add_argument("--default", action="store_true", help=tr(la, "make it the default preset"))
    pd = command(psub, "delete", N_("delete a preset set"), [org])
    pd.add_argument("--name", required=True, metavar="NAME", help=tr(la, "the preset set's name"))
    df = command(psub, "default", N_("choose the default preset"), [org])
    which = df.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", metavar="NAME", help=tr(la, "a preset set of the organisation"))
    which.add_argument("--none", action="store_true", help=tr(la, "no default preset"))
