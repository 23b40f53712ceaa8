"""The release tags the repository carries (release/tags.toml): each names a commit of
this history whose CHANGELOG has that release, every released CHANGELOG section is
recorded, and a clone made without tags gets them back (and with them its version), while
a tag on another commit is never moved."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from release import tags
from release.changelog import parse

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_each_recorded_tag_names_its_release_in_this_history() -> None:
    record = tags.recorded()
    assert "v1.0.0" in record
    for tag, commit in record.items():
        # the commit is in this clone, and on the branch: a release of this history
        git(ROOT, "merge-base", "--is-ancestor", commit, "HEAD")
        changelog = git(ROOT, "show", f"{commit}:CHANGELOG.md")
        assert tag.removeprefix("v") in {s.name for s in parse(changelog)}, tag
        have = subprocess.run(["git", "rev-parse", "--verify", "--quiet",
                               f"refs/tags/{tag}^{{commit}}"], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if have.returncode == 0:  # a clone with its tags: the same commit
            assert have.stdout.strip() == commit, tag


def test_every_released_changelog_section_is_recorded() -> None:
    released = {s.name for s in parse((ROOT / "CHANGELOG.md").read_text())
                if re.fullmatch(r"\d+\.\d+\.\d+", s.name)}
    assert released
    assert {f"v{name}" for name in released} == set(tags.recorded())


def test_a_clone_without_tags_gets_them_back_and_its_version(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-tags", str(ROOT), str(clone)],
                   check=True, timeout=120)
    assert git(clone, "tag", "-l") == ""
    outcomes = tags.restore(clone)
    assert {(o.tag, o.state) for o in outcomes} == {(t, "restored") for t in tags.recorded()}
    assert [o.state for o in tags.restore(clone)] == ["present"] * len(outcomes)
    assert git(clone, "rev-parse", "v1.0.0^{commit}") == tags.commit_of("v1.0.0")
    # setuptools-scm reads it: a version after 1.0.0, not 0.1.devN
    scm = subprocess.run([str(VENV_PYTHON), "-m", "setuptools_scm"], cwd=clone,
                         capture_output=True, text=True, check=True, timeout=60)
    version = scm.stdout.strip().splitlines()[-1]
    assert re.match(r"^1\.0\.(0$|1\.dev\d+)", version), version


def small_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with two commits, and their hashes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    hashes = []
    for n in (1, 2):
        (repo / "f").write_text(str(n))
        git(repo, "add", "f")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit",
            "--quiet", "-m", str(n))
        hashes.append(git(repo, "rev-parse", "HEAD"))
    return repo, hashes[0], hashes[1]


def write_record(tmp_path: Path, entries: dict[str, str]) -> Path:
    path = tmp_path / "tags.toml"
    path.write_text("[tags]\n" + "".join(f'"{t}" = "{c}"\n' for t, c in entries.items()))
    return path


def test_a_tag_on_another_commit_is_never_moved(tmp_path: Path) -> None:
    repo, first, second = small_repo(tmp_path)
    git(repo, "tag", "v1.0.0", second)
    record = write_record(tmp_path, {"v1.0.0": first})
    with pytest.raises(tags.TagError, match="never moved"):
        tags.restore(repo, record)
    assert git(repo, "rev-parse", "v1.0.0^{commit}") == second


def test_a_commit_the_clone_lacks_is_reported_not_invented(tmp_path: Path) -> None:
    repo, first, _ = small_repo(tmp_path)
    absent = "0123456789abcdef0123456789abcdef01234567"
    record = write_record(tmp_path, {"v1.0.0": first, "v1.1.0": absent})
    states = {o.tag: o.state for o in tags.restore(repo, record)}
    assert states == {"v1.0.0": "restored", "v1.1.0": "commit missing"}
    assert git(repo, "tag", "-l") == "v1.0.0"


@pytest.mark.parametrize("entry", [('"1.0.0"', "8f675cf6a39bddc0e7b80c859a808e01f9aa7b59"),
                                   ('"v1.0.0"', "8f675cf"),
                                   ('"v1.0"', "8f675cf6a39bddc0e7b80c859a808e01f9aa7b59")])
def test_a_malformed_record_is_refused(tmp_path: Path, entry: tuple[str, str]) -> None:
    path = tmp_path / "tags.toml"
    path.write_text(f'[tags]\n{entry[0]} = "{entry[1]}"\n')
    with pytest.raises(tags.TagError, match="full commit hash"):
        tags.recorded(path)


def test_outside_a_work_tree_nothing_is_done(tmp_path: Path) -> None:
    tree = tmp_path / "tarball"
    tree.mkdir()
    record = write_record(tmp_path, {"v1.0.0": "0123456789abcdef0123456789abcdef01234567"})
    assert tags.restore(tree, record) == []


def test_a_repository_that_merely_encloses_the_tree_is_left_alone(tmp_path: Path) -> None:
    """A release tarball unpacked inside another checkout: that checkout's tags are not
    the release's, whatever they hold."""
    outer, first, second = small_repo(tmp_path)
    git(outer, "tag", "v1.0.0", second)
    tree = outer / "cardapd-1.0.1"
    tree.mkdir()
    assert tags.restore(tree, write_record(tmp_path, {"v1.0.0": first})) == []
    assert tags.restore(tree, write_record(tmp_path, {"v1.1.0": first})) == []
    assert git(outer, "tag", "-l") == "v1.0.0"


def test_the_command_line(tmp_path: Path) -> None:
    out = subprocess.run(["python3.11", "-m", "release.tags", "--commit", "v1.0.0"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == tags.commit_of("v1.0.0")
    unknown = subprocess.run(["python3.11", "-m", "release.tags", "--commit", "v9.9.9"],
                             cwd=ROOT, capture_output=True, text=True, check=False,
                             timeout=60)
    assert unknown.returncode == 2
    assert "v9.9.9 is not in" in unknown.stderr
