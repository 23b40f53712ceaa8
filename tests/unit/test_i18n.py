"""The message catalogues: every marked text has its Japanese, the language negotiation
of a call and of a command line, and the compiled catalogues are the ones in the tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cardap import i18n
from release import catalogues

ROOT = Path(__file__).resolve().parents[2]


def test_every_marked_text_has_its_japanese() -> None:
    missing = list(catalogues.untranslated("ja"))
    assert not missing, "translate (make i18n-extract, then the .po files): " + "; ".join(
        f"{domain} {where}: {msgid!r}" for domain, msgid, where in missing)


def test_the_compiled_catalogues_are_those_of_the_po_files(tmp_path: Path) -> None:
    """`make catalogues` ran on the .po files in the tree (a stale .mo would show old text)."""
    for domain in i18n.DOMAINS:
        po = catalogues.po_path("ja", domain)
        assert po.exists(), po
        fresh = tmp_path / f"{domain}.mo"
        subprocess.run(["msgfmt", "--check", f"--output-file={fresh}", str(po)], check=True,
                       capture_output=True)
        assert po.with_suffix(".mo").read_bytes() == fresh.read_bytes(), (
            f"{po.with_suffix('.mo')} is stale: make catalogues")


def test_the_extraction_finds_marked_texts_by_domain() -> None:
    found = catalogues.extract()
    assert set(found) <= set(i18n.DOMAINS)
    assert catalogues.domain_of(ROOT / "clients" / "cardap" / "reasons.py") == "reasons"
    assert catalogues.domain_of(ROOT / "clients" / "cardap" / "cli_cards.py") == "cli"
    assert catalogues.domain_of(ROOT / "daemon" / "cardapd" / "daemon.py") == "cardapd"
    assert catalogues.domain_of(ROOT / "clients" / "cardap" / "v1" / "cards_pb2.py") is None


@pytest.mark.parametrize(("header", "expected"), [
    (None, "en"), ("", "en"), ("ja", "ja"), ("ja-JP", "ja"), ("en-US,en;q=0.9", "en"),
    ("ja-JP,ja;q=0.9,en;q=0.8", "ja"), ("en;q=0.5, ja;q=0.9", "ja"), ("fr-FR, de", "en"),
    ("fr;q=1, ja;q=0.1", "ja"), ("ja;q=0, en", "en"), ("*", "en"), ("JA", "ja"),
    ("ja;q=abc, en;q=0.2", "en"),
])
def test_accept_language_picks_the_best_supported(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


def test_accept_language_falls_back_to_the_configured_default() -> None:
    assert i18n.negotiate("fr-FR", default="ja") == "ja"
    assert i18n.negotiate(None, default="ja") == "ja"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "en"), ({"LANG": "ja_JP.UTF-8"}, "ja"), ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "en_US.UTF-8", "LC_ALL": "ja_JP.UTF-8"}, "ja"),
    ({"LANGUAGE": "ja:en", "LANG": "en_US.UTF-8"}, "ja"),
    ({"LANGUAGE": "fr:ja", "LANG": "en_US.UTF-8"}, "ja"),
    ({"LANGUAGE": "", "LC_MESSAGES": "ja_JP", "LANG": "C"}, "ja"),
    ({"LANG": "POSIX"}, "en"), ({"LANG": "de_DE.UTF-8"}, "en"),
])
def test_the_command_line_language_comes_from_the_environment(env: dict[str, str],
                                                               expected: str) -> None:
    assert i18n.from_environment(env) == expected


def test_placeholders_are_filled_and_a_missing_value_is_kept() -> None:
    assert i18n.tr("en", "reader {reader}: {what}", reader="R0") == "reader R0: {what}"
    assert i18n.tr("xx", "plain") == "plain"  # an unknown language is the default


def test_a_supported_language_without_its_compiled_catalogue_says_how_to_make_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        with pytest.raises(i18n.MissingCatalogue, match="make catalogues"):
            i18n.translations("ja")
    finally:
        i18n.translations.cache_clear()


def test_every_literal_message_id_in_the_source_is_extracted() -> None:
    """Babel skips some nested calls (a `tr(...)` in a generator inside another `tr`'s
    arguments): such a text would never be translated and no other test would notice."""
    import ast

    extracted = {str(m.id) for c in catalogues.extract().values() for m in c if m.id}
    position = {"N_": 0, "Msg": 0, "tr": 1}
    missed = []
    for source in catalogues.SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            if catalogues.domain_of(path) is None:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                at = position.get(name)
                if at is None or len(node.args) <= at:
                    continue
                arg = node.args[at]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and arg.value not in extracted:
                    missed.append(f"{path.relative_to(ROOT)}:{node.lineno}: {arg.value!r}")
    assert not missed, "not extracted (take the call out of the generator): " + "; ".join(
        missed)
