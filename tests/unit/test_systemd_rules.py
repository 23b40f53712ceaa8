"""The udev rule for CCID readers and the polkit rule for pcscd say what they should.

The polkit rule is JavaScript: it is evaluated by Node.js against a fake `polkit`
object (the same `addRule`/`Result` surface polkitd gives rules). The udev rule is
parsed with udev's grammar, run through a small evaluator of the subset it uses, and
checked by `udevadm verify` where this udevadm has it (systemd 253 and later).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from testenv import machine_lacks, need

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
POLKIT_RULE = SYSTEMD / "cardapd-pcscd.rules"
UDEV_RULE = SYSTEMD / "60-cardapd-ccid.rules"
ACCESS_PCSC = "org.debian.pcsc-lite.access_pcsc"
ACCESS_CARD = "org.debian.pcsc-lite.access_card"

# --- polkit ---------------------------------------------------------------------------

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const [rulePath, casesJson] = process.argv.slice(2);
const rules = [];
const polkit = {
  Result: {NO: "no", YES: "yes", AUTH_SELF: "auth_self",
           AUTH_SELF_KEEP: "auth_self_keep", AUTH_ADMIN: "auth_admin",
           AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: null},
  addRule: (fn) => { rules.push(fn); },
  addAdminRule: () => {},
  log: () => {},
  spawn: () => { throw new Error("rules must not spawn programs"); },
};
vm.runInNewContext(fs.readFileSync(rulePath, "utf8"), {polkit}, {filename: rulePath});
const out = JSON.parse(casesJson).map(([actionId, user, groups]) => {
  const action = {id: actionId, lookup: () => undefined};
  const subject = {user, pid: 4242, local: false, active: false, session: "",
                   groups, isInGroup: (g) => groups.includes(g),
                   isInNetGroup: () => false};
  for (const rule of rules) {
    const result = rule(action, subject);
    if (result !== undefined && result !== null) { return result; }
  }
  return "undefined";
});
process.stdout.write(JSON.stringify({rules: rules.length, results: out}));
"""


def evaluate_polkit(tmp_path: Path, rule: Path,
                    cases: list[tuple[str, str, list[str]]]) -> tuple[int, list[str]]:
    """(number of rules added, the first non-undefined result for each case)."""
    node = need("node")
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    proc = subprocess.run([node, str(harness), str(rule), json.dumps(cases)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    return int(data["rules"]), [str(r) for r in data["results"]]


POLKIT_CASES: list[tuple[tuple[str, str, list[str]], str]] = [
    ((ACCESS_PCSC, "cardapd", ["cardapd", "cardap-kiosk"]), "yes"),
    ((ACCESS_CARD, "cardapd", ["cardapd"]), "yes"),
    ((ACCESS_PCSC, "kiosk-ui", ["cardap-kiosk"]), "undefined"),
    ((ACCESS_CARD, "gate-app", ["cardap-gate", "cardapd"]), "undefined"),
    ((ACCESS_CARD, "root", ["root"]), "undefined"),
    (("org.freedesktop.systemd1.manage-units", "cardapd", ["cardapd"]), "undefined"),
    (("org.debian.pcsc-lite.access_pcsc_extra", "cardapd", ["cardapd"]), "undefined"),
]


def test_polkit_rule_allows_only_the_service_user_on_the_two_actions(tmp_path: Path) -> None:
    count, results = evaluate_polkit(tmp_path, POLKIT_RULE, [c for c, _ in POLKIT_CASES])
    assert count >= 1
    assert results == [want for _, want in POLKIT_CASES]


def test_polkit_harness_catches_a_rule_that_allows_everyone(tmp_path: Path) -> None:
    """The check above can fail: a rule granting every user is caught."""
    loose = tmp_path / "loose.rules"
    loose.write_text(POLKIT_RULE.read_text().replace('subject.user === "cardapd"', "true"))
    assert loose.read_text() != POLKIT_RULE.read_text()
    _, results = evaluate_polkit(tmp_path, loose, [c for c, _ in POLKIT_CASES])
    assert results != [want for _, want in POLKIT_CASES]


def test_polkit_action_ids_match_the_installed_policy() -> None:
    """Where pcscd ships its polkit policy, our action ids are the ones it declares."""
    policy = Path("/usr/share/polkit-1/actions/org.debian.pcsc-lite.policy")
    if not policy.exists():
        machine_lacks(f"{policy} (this distribution's pcscd is built without polkit)")
    declared = set(re.findall(r'<action id="([^"]+)"', policy.read_text()))
    assert {ACCESS_PCSC, ACCESS_CARD} <= declared


# --- udev -----------------------------------------------------------------------------

MATCH_ONLY = {"ACTION", "DEVPATH", "KERNEL", "SUBSYSTEM", "DRIVER", "KERNELS", "SUBSYSTEMS",
              "DRIVERS", "TAGS", "RESULT", "ATTRS", "TEST", "CONST", "PROGRAM"}
ASSIGN_ONLY = {"LABEL", "GOTO", "OWNER", "GROUP", "MODE", "RUN", "OPTIONS", "IMPORT",
               "SECLABEL"}
BOTH = {"NAME", "SYMLINK", "TAG", "ENV", "ATTR", "SYSCTL"}
WITH_ARG = {"ATTR", "SYSCTL", "ATTRS", "ENV", "CONST", "TEST", "RUN", "IMPORT", "SECLABEL"}
PAIR = re.compile(r'\s*(?P<key>[A-Z_]+)(?:\{(?P<arg>[^}]*)\})?\s*'
                  r'(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*')


@dataclass(frozen=True)
class Pair:
    key: str
    arg: str | None
    op: str
    value: str


def parse_udev(text: str) -> list[list[Pair]]:
    """udev rules as a list of rules (lines), each a list of KEY op "value" pairs."""
    rules: list[list[Pair]] = []
    logical = re.sub(r"\\\n", " ", text)
    for number, line in enumerate(logical.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pairs: list[Pair] = []
        for chunk in _split_commas(stripped):
            m = PAIR.fullmatch(chunk)
            assert m, f"line {number}: not KEY op \"value\": {chunk!r}"
            key, arg, op = m["key"], m["arg"], m["op"]
            assert key in MATCH_ONLY | ASSIGN_ONLY | BOTH, f"line {number}: unknown key {key}"
            assert (arg is not None) == (key in WITH_ARG) or key in {"RUN", "IMPORT"}, \
                f"line {number}: {key} {'needs' if arg is None else 'takes no'} {{argument}}"
            if key in MATCH_ONLY:
                assert op in ("==", "!="), f"line {number}: {key} only matches ({op})"
            if key in ASSIGN_ONLY:
                assert op not in ("==", "!="), f"line {number}: {key} cannot be matched"
            pairs.append(Pair(key, arg, op, m["value"]))
        rules.append(pairs)
    return rules


def _split_commas(line: str) -> list[str]:
    """Split at commas outside double quotes."""
    parts, current, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    assert not quoted, f"unbalanced quotes: {line!r}"
    parts.append(current)
    return parts


@dataclass
class Device:
    """A uevent as udev rules see it (after the builtins of 50-udev-default.rules)."""

    action: str
    subsystem: str
    env: dict[str, str]
    tags: set[str] = field(default_factory=set)


def run_udev(rules: list[list[Pair]], dev: Device) -> Device:
    """Evaluate the subset of udev rules this file uses (match, ENV/TAG assign, GOTO)."""
    labels = {p.value: i for i, rule in enumerate(rules) for p in rule if p.key == "LABEL"}
    i = 0
    while i < len(rules):
        rule, jump = rules[i], None
        matched = True
        for p in rule:
            if p.op in ("==", "!="):
                have = {"ACTION": dev.action, "SUBSYSTEM": dev.subsystem}.get(
                    p.key, dev.env.get(p.arg or "", "") if p.key == "ENV" else None)
                assert have is not None, f"the evaluator does not know {p.key}"
                hit = any(fnmatch.fnmatchcase(have, alt) for alt in p.value.split("|"))
                if hit != (p.op == "=="):
                    matched = False
                    break
        if matched:
            for p in rule:
                if p.key == "TAG" and p.op in ("+=", "="):
                    dev.tags.add(p.value)
                elif p.key == "ENV" and p.op == "=":
                    dev.env[p.arg or ""] = p.value
                elif p.key == "ENV" and p.op == "+=":
                    old = dev.env.get(p.arg or "", "")
                    dev.env[p.arg or ""] = f"{old} {p.value}".strip()
                elif p.key == "GOTO":
                    jump = labels[p.value]
        i = jump if jump is not None else i + 1
    return dev


def usb(interfaces: str, action: str = "add", devtype: str = "usb_device") -> Device:
    return Device(action, "usb", {"DEVTYPE": devtype, "ID_USB_INTERFACES": interfaces})


def test_udev_rule_parses_with_known_keys_and_operators() -> None:
    rules = parse_udev(UDEV_RULE.read_text())
    assert rules
    labels = [p.value for rule in rules for p in rule if p.key == "LABEL"]
    gotos = [p.value for rule in rules for p in rule if p.key == "GOTO"]
    assert gotos
    assert set(gotos) <= set(labels), "every GOTO needs its LABEL"
    assert len(labels) == len(set(labels))
    text = UDEV_RULE.read_text()
    assert 'ENV{ID_USB_INTERFACES}!="*:0b0000:*"' in text


@pytest.mark.parametrize("bad", [
    'SUBSYSTEM="usb", TAG+="systemd"',          # assignment to a match-only key
    'ACTION=="add" TAG+="systemd"',             # missing comma
    'FOO=="bar"',                               # unknown key
    'ENV{X}=="unterminated, TAG+="systemd"',    # unbalanced quotes
    'GOTO=="end"',                              # matching an assign-only key
])
def test_udev_parser_rejects_broken_lines(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse_udev(bad + "\n")


def test_udev_rule_tags_ccid_readers_for_systemd() -> None:
    rules = parse_udev(UDEV_RULE.read_text())
    reader = run_udev(rules, usb(":0b0000:"))
    assert "systemd" in reader.tags
    assert "pcscd.socket" in reader.env.get("SYSTEMD_WANTS", "").split()
    # A composite device (e.g. a keyboard with a built-in reader) is a reader too.
    combo = run_udev(rules, usb(":030101:0b0000:"))
    assert "systemd" in combo.tags


@pytest.mark.parametrize("dev", [
    usb(":080650:"),                       # USB mass storage
    usb(":030101:030102:"),                # keyboard + mouse
    usb(":0b0000:", devtype="usb_interface"),
    Device("add", "tty", {"ID_USB_INTERFACES": ":0b0000:"}),
])
def test_udev_rule_leaves_other_devices_alone(dev: Device) -> None:
    out = run_udev(parse_udev(UDEV_RULE.read_text()), dev)
    assert not out.tags
    assert "SYSTEMD_WANTS" not in out.env


def test_udev_rule_grants_no_device_access() -> None:
    """pcscd owns the USB device: no OWNER/GROUP/MODE/uaccess/RUN from this file."""
    for rule in parse_udev(UDEV_RULE.read_text()):
        for p in rule:
            assert p.key not in ("OWNER", "GROUP", "MODE", "RUN"), p
            assert not (p.key == "TAG" and p.value in ("uaccess", "seat")), p


def test_udevadm_verify() -> None:
    udevadm = need("udevadm")
    probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True, text=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        machine_lacks("`udevadm verify` (it arrived with systemd 253)")
    proc = subprocess.run([udevadm, "verify", "--resolve-names=never", str(UDEV_RULE)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
