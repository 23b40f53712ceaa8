"""`cardapd --check-config` and the loading link's TLS files: a missing, unreadable or
malformed file is reported by key and path (exit 3: valid, but the daemon would start with
the loading link down); a configuration without a loading service has nothing to check.
(Readable by the service user, as root: tests/integration/test_debian_package.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from testenv import need

from cardap_sim.loadsvc.devca import write_bundle
from cardapd.config import load_config
from cardapd.config.files import loading_tls_problems
from cardapd.main import main


def config(tmp_path: Path, tls: Path) -> Path:
    path = tmp_path / "cardapd.toml"
    path.write_text(f'[loading]\naddress = "loading.example.jp:7443"\nca = "{tls}/ca.pem"\n'
                    f'cert = "{tls}/kiosk-01.pem"\nkey = "{tls}/kiosk-01.key"\n')
    return path


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    out = tmp_path / "tls"
    write_bundle(out, [("kiosk-01", "org-a")])
    return out


def test_usable_files_pass(tmp_path: Path, tls: Path, capsys: pytest.CaptureFixture[str]
                           ) -> None:
    path = config(tmp_path, tls)
    assert loading_tls_problems(load_config(path).loading) == []
    assert main(["--config", str(path), "--check-config"]) == 0
    assert "is valid" in capsys.readouterr().out


def test_missing_files_are_named_with_their_key(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, tmp_path / "nowhere")
    assert main(["--config", str(path), "--check-config"]) == 3
    err = capsys.readouterr().err
    assert "the loading link cannot be set up (the daemon would start with it down)" in err
    for key, name in (("ca", "ca.pem"), ("cert", "kiosk-01.pem"), ("key", "kiosk-01.key")):
        assert f"loading.{key}: {tmp_path}/nowhere/{name}: missing" in err


def test_wrong_kinds_of_file(tmp_path: Path, tls: Path) -> None:
    (tls / "ca.pem").unlink()
    (tls / "ca.pem").mkdir()
    (tls / "kiosk-01.pem").write_text("not a certificate\n")
    key = ec.generate_private_key(ec.SECP256R1())
    (tls / "kiosk-01.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    problems = {p.key: p.problem for p in
                loading_tls_problems(load_config(config(tmp_path, tls)).loading)}
    assert problems == {
        "loading.ca": "not a regular file",
        "loading.cert": "not a PEM certificate (-----BEGIN CERTIFICATE-----)",
        "loading.key": "the private key is encrypted; cardapd needs it unencrypted "
                       "(mode 0640)"}


def test_a_certificate_where_the_key_belongs(tmp_path: Path, tls: Path) -> None:
    (tls / "kiosk-01.key").write_bytes((tls / "kiosk-01.pem").read_bytes())
    (problem,) = loading_tls_problems(load_config(config(tmp_path, tls)).loading)
    assert (problem.key, problem.problem) == ("loading.key", "not a PEM private key")


def test_files_this_user_cannot_read(tls: Path) -> None:
    """As another user (nobody, through setpriv, when the test runs as root): a key it may
    not read, and a directory it may not enter."""
    base = Path(tempfile.mkdtemp(prefix="cardapd-tls-"))
    try:
        shutil.copytree(tls, base / "tls")
        base.chmod(0o755)
        (base / "tls").chmod(0o755)
        for f in (base / "tls").iterdir():
            f.chmod(0o644)
        (base / "tls" / "kiosk-01.key").chmod(0o600)
        (base / "private").mkdir(mode=0o700)
        cfg = base / "cardapd.toml"
        cfg.write_text(f'[loading]\naddress = "l.example.jp:7443"\nca = "{base}/tls/ca.pem"\n'
                       f'cert = "{base}/private/kiosk-01.pem"\n'
                       f'key = "{base}/tls/kiosk-01.key"\n')
        cfg.chmod(0o644)
        code = ("import sys\nfrom cardapd.main import main\n"
                f"sys.exit(main(['--config', {str(cfg)!r}, '--check-config']))")
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            cmd = [need("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                check=False, cwd=base)
        assert result.returncode == 3, result.stdout + result.stderr
        assert re.search(r"loading\.key: \S+/tls/kiosk-01\.key: not readable by \S+ "
                         r"\(permission denied\)", result.stderr), result.stderr
        assert re.search(r"loading\.cert: \S+/private/kiosk-01\.pem: not reachable by \S+ "
                         r"\(permission denied on a directory\)", result.stderr), result.stderr
        assert "loading.ca" not in result.stderr
    finally:
        shutil.rmtree(base)


def test_no_loading_service_nothing_to_check(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("[tap]\ntype_c_aids = [\"D392F00043010001\"]\n")
    assert loading_tls_problems(load_config(path).loading, as_user="cardapd") == []
    assert main(["--config", str(path), "--check-config"]) == 0


def test_an_invalid_file_is_still_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[loading]\naddress = \"x:1\"\n")  # ca, cert, key required
    assert main(["--config", str(path), "--check-config"]) == 2
