"""docs/prometheus and docs/operations.md: valid for promtool, true to the code.

promtool (Debian package `prometheus`, installed by `make setup`) checks the scrape
configuration inside a whole prometheus.yml, the alert rules, and runs the rule unit
tests. The metric names the rules use must be the daemon's; the exit codes, next
actions and configuration examples in the operations guide must match the code.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

from testenv import need

from cardap import exitcodes
from cardap.cli import CODE_EXIT
from cardap.cli_cards import VERDICT_EXIT

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "docs" / "prometheus"
METRICS_PY = ROOT / "daemon" / "cardapd" / "telemetry" / "metrics.py"
DIAGNOSE_PY = ROOT / "daemon" / "cardapd" / "readers" / "diagnose.py"
OPERATIONS = ROOT / "docs" / "operations.md"
FILE_SD_GLOB = "/etc/prometheus/file_sd/cardapd-gates-*.yml"


def promtool() -> str:
    return need("promtool")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          cwd=cwd)


def prometheus_yml(tmp_path: Path, scrape: str) -> Path:
    """A whole prometheus.yml: globals, alerts.yml as rule file, scrape.yml's jobs."""
    assert FILE_SD_GLOB in scrape
    local_sd = tmp_path / "file_sd"
    local_sd.mkdir()
    shutil.copy(PROM / "file_sd" / "gates.example.yml", local_sd / "cardapd-gates-hq.yml")
    scrape = scrape.replace(FILE_SD_GLOB, str(local_sd / "cardapd-gates-*.yml"))
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 30s\n  evaluation_interval: 30s\n"
                      "rule_files:\n  - alerts.yml\n" + scrape)
    return config


def test_scrape_config_checks_with_the_rules(tmp_path: Path) -> None:
    tool = promtool()
    scrape = (PROM / "scrape.yml").read_text()
    for job in ("job_name: cardapd-kiosk", "job_name: cardapd-gate", "file_sd_configs:",
                "static_configs:", "role: kiosk", "replacement: gate"):
        assert job in scrape, job
    result = run(tool, "check", "config", str(prometheus_yml(tmp_path, scrape)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout + result.stderr


def test_scrape_config_check_can_fail(tmp_path: Path) -> None:
    tool = promtool()
    broken = (PROM / "scrape.yml").read_text().replace("scrape_timeout: 5s",
                                                       "scrape_timeout: 60s")
    result = run(tool, "check", "config", str(prometheus_yml(tmp_path, broken)))
    assert result.returncode != 0  # a timeout above the interval is refused


def test_alert_rules_check() -> None:
    result = run(promtool(), "check", "rules", str(PROM / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = run(promtool(), "test", "rules", "alerts_test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (PROM / "alerts_test.yml").read_text()
    assert "alertname: CardapdPcscDown" in text


def test_alert_unit_tests_notice_a_changed_for(tmp_path: Path) -> None:
    """The PC/SC-down test pins its `for:`: a longer one makes the test fail."""
    tool = promtool()
    rules = (PROM / "alerts.yml").read_text()
    changed = re.sub(r"(expr: cardapd_pcsc_up == 0\n\s+for: )2m", r"\g<1>10m", rules)
    assert changed != rules
    (tmp_path / "alerts.yml").write_text(changed)
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = run(tool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CardapdPcscDown" in result.stdout + result.stderr


def alert_blocks() -> dict[str, str]:
    text = (PROM / "alerts.yml").read_text()
    parts = re.split(r"(?m)^\s+- alert: (\w+)\n", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_has_for_severity_and_annotations() -> None:
    blocks = alert_blocks()
    assert set(blocks) >= {"CardapdDown", "CardapdPcscDown", "CardapdNoReader",
                           "CardapdLoadFailures", "CardapdAuditWriteFailures",
                           "CardapdSlowReads", "CardapdGateNotWatched",
                           "CardapdLoadingLinkDown", "CardapdRevocationFeedStale",
                           "CardapdBiometricDeviceMissing", "CardapdAuditChainBroken",
                           "CardapdLoadingCertificateExpiresSoon",
                           "CardapdLoadingCertificateExpiring"}
    for name, block in blocks.items():
        assert re.search(r"(?m)^\s+for: \d+[smh]$", block), name
        assert re.search(r"(?m)^\s+severity: (critical|warning)$", block), name
        assert "summary:" in block, name
        assert "description:" in block, name


def daemon_metric_names() -> set[str]:
    """The metric family names metrics.py registers (first string argument)."""
    tree = ast.parse(METRICS_PY.read_text())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("Counter", "Gauge", "Histogram", "Info")
                and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def family(sample_name: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count", "_info"):
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


def test_alerts_use_only_metrics_the_daemon_exports() -> None:
    known = daemon_metric_names()
    assert {"cardapd_pcsc_up", "cardapd_operations", "cardapd_readers"} <= known
    used = set(re.findall(r"\bcardapd_[a-z_]+", (PROM / "alerts.yml").read_text()))
    assert used
    for name in used:
        assert family(name) in known, f"{name} is not a metric of telemetry/metrics.py"
    assert family("cardapd_no_such_metric_total") not in known  # the check can fail


def test_operations_guide_metric_table_matches_the_daemon() -> None:
    text = OPERATIONS.read_text()
    documented = {family(n) for n in re.findall(r"`(cardapd_[a-z_]+)", text)}
    known = daemon_metric_names()
    assert known <= documented, f"undocumented: {known - documented}"
    assert documented <= known, f"not exported: {documented - known}"


def test_operations_guide_exit_codes_match_cardapctl() -> None:
    """The guide's table is cardapctl's one table (cardap.exitcodes), row for row."""
    text = OPERATIONS.read_text()
    section = text.split("### Exit codes", 1)[1].split("###", 1)[0]
    assert exitcodes.markdown() in section
    documented = {int(n) for n in re.findall(r"(?m)^\| (\d+) \|", section)}
    assert documented == {e.code for e in exitcodes.EXITS}
    assert {0, 1} | set(CODE_EXIT.values()) | set(VERDICT_EXIT.values()) <= documented
    for verdict, code in (("WARNING", 10), ("CARD_FAULT", 11), ("READER_FAULT", 12),
                          ("NO_CARD", 13)):
        assert re.search(rf"(?m)^\| {code} \| {verdict} \| `diagnose`: {verdict}\b",
                         section), verdict


def test_operations_guide_quotes_the_next_actions_verbatim() -> None:
    """Every fixed next-action text of diagnose appears word for word in the guide."""
    tree = ast.parse(DIAGNOSE_PY.read_text())
    actions: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("ACTION_")):
            marked = node.value  # N_("…"): the English message id
            if (isinstance(marked, ast.Call) and isinstance(marked.func, ast.Name)
                    and marked.func.id == "N_"):
                marked = marked.args[0]
            value = ast.literal_eval(marked)
            if isinstance(value, str) and "{" not in value:
                actions[node.targets[0].id] = value
    assert {"ACTION_PCSC", "ACTION_READER", "ACTION_MUTE", "ACTION_GARBAGE",
            "ACTION_NOT_MNC", "ACTION_NO_CARD"} <= set(actions)
    guide = " ".join(OPERATIONS.read_text().split())
    for name, action in actions.items():
        assert " ".join(action.split()) in guide, name


def toml_examples() -> dict[str, str]:
    """The guide's complete configuration files: toml blocks headed by their path."""
    text = OPERATIONS.read_text()
    blocks = re.findall(r"```toml\n(# /etc/cardapd/cardapd\.toml \((\w+)\)\n.*?)```", text,
                        flags=re.S)
    return {name: body for body, name in blocks}


def test_operations_guide_config_examples_are_the_shipped_ones() -> None:
    """The guide quotes docs/examples/{kiosk,gate}.toml (what the package installs) word
    for word; tests/unit/test_release.py loads them."""
    examples = toml_examples()
    assert set(examples) == {"kiosk", "gate"}
    for name, body in examples.items():
        assert body == (ROOT / "docs" / "examples" / f"{name}.toml").read_text(), name


def test_operations_guide_covers_the_topics() -> None:
    text = OPERATIONS.read_text()
    for needle in ("apt-get install ./cardapd_", "/opt/venvs/cardapd", "cardapd.sysusers",
                   "cardapd.tmpfiles", "60-cardapd-ccid.rules", "cardapd-pcscd.rules",
                   "docs/prometheus/", "apt-get remove cardapd", "apt-get purge cardapd",
                   "appoint-admin", "cardapctl enroll", "roster.db", "--check-config",
                   ".backup", "audit.head", "journal.db", "journalctl -u cardapd -o json",
                   "request_id", "cardapctl diagnose", "text input assist AP",
                   "cardap-kiosk", "cardap-gate", "cardap-ops", "0660"):
        assert needle in text, needle
    # Every systemd/ file the guide names exists.
    for name in set(re.findall(r"(?<![\w/])systemd/([\w.-]+)", text)):
        assert (ROOT / "systemd" / name).exists(), name
