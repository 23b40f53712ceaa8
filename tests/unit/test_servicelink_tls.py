"""The loading link's TLS files as the daemon reads them (servicelink.tls): what the
certificate says (subject, CN as the terminal id, expiry warnings) and a key that is not
the certificate's refused with the key to fix; real certificates from the dev CA."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cardap_sim.loadsvc.devca import write_bundle
from cardapd.config import LoadingConfig, load_config
from cardapd.errors import ConfigError
from cardapd.servicelink.tls import CERT_WARNING, certificate_cn, read_tls


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    out = tmp_path / "tls"
    write_bundle(out, [("kiosk-01", "org-a"), ("kiosk-02", "org-b")])
    return out


def loading(tmp_path: Path, tls: Path, cert: str = "kiosk-01", key: str = "kiosk-01"
            ) -> LoadingConfig:
    path = tmp_path / "cardapd.toml"
    path.write_text(f'[loading]\naddress = "loading.example.jp:7443"\nca = "{tls}/ca.pem"\n'
                    f'cert = "{tls}/{cert}.pem"\nkey = "{tls}/{key}.key"\n')
    return load_config(path).loading


def test_the_certificate_says_who_the_terminal_is(tmp_path: Path, tls: Path) -> None:
    read = read_tls(loading(tmp_path, tls))
    assert read.subject == "CN=kiosk-01, O=org-a"
    assert certificate_cn(tls / "kiosk-01.pem") == "kiosk-01"
    assert certificate_cn(tls / "kiosk-02.pem") == "kiosk-02"
    # the same files give the same digest (a reload that changes nothing keeps the link)
    assert read_tls(loading(tmp_path, tls)).digest == read.digest


def test_no_readable_certificate_gives_no_cn(tmp_path: Path, tls: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    assert certificate_cn(None) == ""
    assert certificate_cn(tmp_path / "absent.pem") == ""
    assert certificate_cn(tmp_path / "junk.pem") == ""
    assert certificate_cn(tls / "kiosk-01.key") == ""  # a key is no certificate


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, tls: Path) -> None:
    with pytest.raises(ConfigError, match="is not the key of the certificate") as err:
        read_tls(loading(tmp_path, tls, cert="kiosk-01", key="kiosk-02"))
    assert err.value.metadata == {"key": "loading.key"}


def test_expiry_warnings(tmp_path: Path, tls: Path) -> None:
    read = read_tls(loading(tmp_path, tls))
    assert read.warning(read.not_after - CERT_WARNING - timedelta(hours=1)) == ""
    soon = read.warning(read.not_after - timedelta(days=3, hours=1))
    assert "(CN=kiosk-01, O=org-a) expires" in soon
    assert "(in 3 days)" in soon
    assert "(in 1 day)" in read.warning(read.not_after - timedelta(days=1, hours=1))
    gone = read.warning(read.not_after + timedelta(seconds=1))
    assert "EXPIRED" in gone
    assert "systemctl reload cardapd" in gone
