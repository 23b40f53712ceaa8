"""Release tooling: the Debian package (`make deb`), its changelog, the manual pages
(`make man`). Standard library only, except where a pinned tool is named: it runs with
Debian's python3.11 before any virtualenv exists."""
