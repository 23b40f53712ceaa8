"""The configuration reference and example are what the schema generates (`make docs`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardapd.config import Config, load_config
from cardapd.config.reference import example, markdown
from cardapd.config.reload import all_restart_keys

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("name", "generate"), [("configuration.md", markdown),
                                                ("config.example.toml", example)])
def test_committed_reference_matches_the_schema(name: str, generate: object) -> None:
    committed = (DOCS / name).read_text()
    assert committed == generate(), f"docs/{name} is stale: run `make docs`"  # type: ignore[operator]


def test_the_example_is_the_defaults() -> None:
    assert load_config(DOCS / "config.example.toml") == Config.default()


def test_every_key_and_restart_mark_is_documented() -> None:
    text = markdown()
    for key in all_restart_keys():
        assert f"`{key}" in text, key
    for line in text.splitlines():
        if line.startswith("| `") and line.count("|") >= 6:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            assert cells[-1], f"undocumented key: {cells[0]}"
