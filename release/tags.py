"""The release tags the repository records (release/tags.toml), restored into a clone that
came without them.

The version is setuptools-scm's reading of the newest tag (D36); the protos are checked
against the first release's (`make proto-lint`) and the Debian upgrade test builds it.
A clone without tags would silently call itself 0.1.devN and have nothing to compare
with, so `make setup` runs `python3.11 -m release.tags` first (D57). Usage:

    python -m release.tags            # restore the missing tags; warn on a shallow clone
    python -m release.tags --check    # also fail when a recorded commit is missing
    python -m release.tags --commit v1.0.0   # print the commit a tag names (in this clone)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "release" / "tags.toml"
TAG = re.compile(r"^v\d+\.\d+\.\d+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class TagError(RuntimeError):
    """The record or the repository's tags cannot be reconciled."""


def recorded(path: Path = RECORD) -> dict[str, str]:
    """Tag -> full commit hash, as release/tags.toml records them (checked for form)."""
    tags = tomllib.loads(path.read_text(encoding="utf-8")).get("tags", {})
    for tag, commit in tags.items():
        if not TAG.match(tag) or not isinstance(commit, str) or not COMMIT.match(commit):
            raise TagError(f"{path}: {tag!r} = {commit!r} is not 'vX.Y.Z' = a full commit hash")
    return dict(tags)


def commit_of(tag: str, path: Path = RECORD) -> str:
    """The commit `tag` names in the record; TagError when the record lacks it."""
    try:
        return recorded(path)[tag]
    except KeyError:
        raise TagError(f"{tag} is not in {path}") from None


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=False)


def _own_repository(repo: Path) -> bool:
    """Whether `repo` is the top of its own git work tree: never act on a repository that
    merely encloses it (a release tarball unpacked inside another checkout). No git, or
    no work tree: False (a tarball knows its version from .git_archival.txt). A git that
    refuses the tree (e.g. `safe.directory`) is an error, not silence."""
    try:
        top = _git(repo, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        return False
    if top.returncode != 0:
        if "not a git repository" in top.stderr:
            return False
        raise TagError(f"git cannot read {repo}: {top.stderr.strip()}")
    return Path(top.stdout.strip()).resolve() == repo.resolve()


def _tag_names(repo: Path, tag: str) -> str | None:
    """The commit the tag `tag` names, or None."""
    have = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
    return have.stdout.strip() if have.returncode == 0 else None


@dataclass(frozen=True)
class Outcome:
    """What restore did with one recorded tag."""

    tag: str
    commit: str
    state: str  # "present", "restored", "commit missing"


def _has_commit(repo: Path, commit: str) -> bool:
    """Whether the clone holds `commit` (a shallow one may not)."""
    return _git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def restore(repo: Path = ROOT, path: Path = RECORD) -> list[Outcome]:
    """Create each recorded tag the repository lacks, on its recorded commit. A tag that
    exists on another commit raises TagError (a release is never moved); a commit the
    clone lacks (a shallow clone) is reported, not fatal. No-op unless `repo` is the top of
    its own work tree (a release tarball knows its version from .git_archival.txt).
    Release tags stay lightweight, as `git tag vX.Y.Z` makes them (a restored one must
    not clash with the origin's)."""
    if not _own_repository(repo):
        return []
    outcomes = []
    for tag, commit in recorded(path).items():
        have = _tag_names(repo, tag)
        if have is None and not _has_commit(repo, commit):
            outcomes.append(Outcome(tag, commit, "commit missing"))
            continue
        state = "present"
        if have is None:
            made = _git(repo, "tag", tag, commit)
            if made.returncode == 0:
                have, state = commit, "restored"
            else:  # another make may have made it meanwhile
                have = _tag_names(repo, tag)
                if have is None:
                    raise TagError(f"git tag {tag} {commit}: {made.stderr.strip()}")
        if have != commit:
            raise TagError(f"the tag {tag} names {have}, but {path.name} records {commit}: "
                           f"a release tag is never moved")
        outcomes.append(Outcome(tag, commit, state))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Restore the tags (exit 0; 1 with --check when a commit is missing; 2 on a conflict)."""
    parser = argparse.ArgumentParser(prog="python -m release.tags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="fail when a recorded commit is not in this clone")
    parser.add_argument("--commit", metavar="TAG",
                        help="print the commit TAG names (exit 1 if this clone lacks it)")
    args = parser.parse_args(argv)
    try:
        if args.commit:
            commit = commit_of(args.commit)
            if not _has_commit(ROOT, commit):
                print(f"release.tags: {args.commit}'s commit {commit} is not in this clone "
                      f"(a shallow clone?): run git fetch --unshallow", file=sys.stderr)
                return 1
            print(commit)
            return 0
        outcomes = restore()
    except TagError as exc:
        print(f"release.tags: {exc}", file=sys.stderr)
        return 2
    missing = False
    for o in outcomes:
        if o.state == "restored":
            print(f"release.tags: restored the tag {o.tag} on {o.commit[:12]} "
                  f"(recorded in release/tags.toml)")
        elif o.state == "commit missing":
            missing = True
            print(f"release.tags: {o.tag}'s commit {o.commit[:12]} is not in this clone (a "
                  f"shallow clone?): the version, make proto-lint and the upgrade test need "
                  f"it; run git fetch --unshallow", file=sys.stderr)
    return 1 if missing and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
