# cardapd — build, run and test. `make run` and `make test` install what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/cardap/v1/*.proto)
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev swig gcc pcsc-tools dbus fprintd libfprint-2-2 \
  systemd udev iproute2 prometheus util-linux systemd-journal-remote opensc gettext
# `make deb` (debian/control's Build-Depends, lintian) and its install test (mmdebstrap).
DEB_PACKAGES := debhelper dh-virtualenv lintian build-essential python3.11 python3.11-venv \
  python3.11-dev mmdebstrap

.PHONY: setup system-deps proto run test test-unit test-stack lint bench certs wheel clean help docs \
  deb man lock catalogues i18n-extract proto-lint release-tags

help:
	@echo "make run    - bring up pcscd + vpcd + virtual card + cardapd and show it working"
	@echo "make test   - install everything and run all tests (unit + real stack)"
	@echo "make lint   - ruff + mypy + import contracts (lint-imports) + buf lint/breaking (protos)"
	@echo "make bench  - benchmarks (results go to docs/benchmarks.md)"
	@echo "make proto  - generate Python code and .pyi stubs from proto/"
	@echo "make deb    - the Debian package build/deb/cardapd_<version>_<arch>.deb (lintian clean)"
	@echo "make man    - the manual pages cardapd(8) and cardapctl(1) in build/man"

# Debian packages for the real stack (skipped when already installed).
.stamp-system: Makefile
	@missing=$$(for p in $(APT_PACKAGES) $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@
system-deps: .stamp-system

# The release tags recorded in release/tags.toml, restored into a clone that came without
# them (before the venv: the installed version is setuptools-scm's reading of them; D57).
release-tags: | .stamp-system
	@$(PYTHON) -m release.tags

$(VENV)/.stamp: pyproject.toml dev/pyproject.toml | .stamp-system release-tags
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./dev
	@touch $@

.stamp-proto: $(PROTOS) $(VENV)/.stamp
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=clients --grpc_python_out=clients \
	  --mypy_out=clients --mypy_grpc_out=clients $(PROTOS)
	@touch $@
proto: .stamp-proto

# The Japanese message catalogues (cardap/locale/ja/LC_MESSAGES/*.po), compiled by msgfmt.
LOCALE := clients/cardap/locale
MO_FILES := $(patsubst %.po,%.mo,$(wildcard $(LOCALE)/*/LC_MESSAGES/*.po))
$(LOCALE)/%.mo: $(LOCALE)/%.po | .stamp-system
	msgfmt --check --output-file=$@ $<
catalogues: $(MO_FILES)

# After changing a marked text (N_, tr): new ids into the .pot templates and the .po files
# (then translate the empty entries; the unit tests list any left).
i18n-extract: setup
	$(PY) -m release.catalogues

# Development tools from npm, exactly as package-lock.json pins them: buf (proto lint and
# breaking-change checks) and grpc-js (the Node client test).
.stamp-npm: package.json package-lock.json | .stamp-system
	npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

setup: .stamp-system release-tags $(VENV)/.stamp .stamp-proto catalogues .stamp-npm

# RUN_DIR: the stack's working directory (emptied at start); RUN_ARGS: e.g. --no-demo
RUN_DIR ?= run
run: setup
	$(PY) -m cardap_sim.demo --dir $(RUN_DIR) $(RUN_ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup proto-lint
	$(VENV)/bin/ruff check lib daemon clients dev tests bench release
	$(VENV)/bin/mypy lib daemon clients dev release
	$(VENV)/bin/lint-imports --config pyproject.toml

# The protos as a contract (buf.yaml; docs/decisions.md): buf's lint rules, and no
# change that breaks a v1.0.0 client, checked against the protos of the release's commit
# (recorded in release/tags.toml, so that a clone without tags checks it too).
BUF := node_modules/.bin/buf
RELEASE_TAG := v1.0.0
proto-lint: .stamp-npm
	$(BUF) lint
	@commit=$$($(PYTHON) -m release.tags --commit $(RELEASE_TAG)) || exit 1; \
	echo "buf breaking against $(RELEASE_TAG) ($$commit)"; \
	set -o pipefail; git archive --format=tar "$$commit" proto \
	  | $(BUF) breaking --against '-#format=tar,subdir=proto'

# Dev CA, loading-service and terminal certificates, dev master keys (test-only).
certs: setup
	$(PY) -m cardap_sim.loadsvc.devca --out run/certs --terminal kiosk-01 --organisation org-a
	$(PY) -m cardap_sim.loadsvc dev-keys --out run/certs/loadsvc-keys.json

# A wheel with every console script and the generated protobuf code (built offline).
wheel: setup
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

# Every benchmark; each replaces its own section of docs/benchmarks.md.
bench: setup
	$(PY) -m bench.run --out docs/benchmarks.md
	$(PY) -m bench.load --out docs/benchmarks.md
	$(PY) -m bench.reads --out docs/benchmarks.md
	$(PY) -m bench.audit --out docs/benchmarks.md
	$(PY) -m bench.logins --out docs/benchmarks.md
	$(PY) -m bench.identify --out docs/benchmarks.md

# The Debian package (release/debbuild.py; needs only Debian's python3.11 and the build
# dependencies): the version from the git tag, a clean build of the working tree's files,
# lintian without errors. An unchanged tree is not built twice (build/deb/cache).
deb: .stamp-system release-tags
	/usr/bin/python3.11 -m release.debbuild --out build/deb

# Manual pages from the argparse parsers of cardapd and cardapctl (argparse-manpage).
man: setup
	$(PY) -m release.manpages build/man
	@echo "read them with: man -l build/man/cardapd.8"

# release/requirements.txt: the package's locked, hash-checked dependencies, from the pins
# in pyproject.toml (PyPI only: the machine's pip configuration is ignored).
lock: setup
	env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null $(VENV)/bin/pip-compile \
	  --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file release/requirements.txt pyproject.toml

clean:
	rm -rf $(VENV) node_modules .stamp-* build dist *.egg-info .mypy_cache .ruff_cache

# Generated documentation: the configuration reference and example (from the schema), the
# README's reason table and the guide's exit-code table (from clients/cardap/reasons.py).
docs: setup
	$(PY) -m cardapd.config.reference markdown > docs/configuration.md
	$(PY) -m cardapd.config.reference example > docs/config.example.toml
	$(PY) -m cardap.reasons readme README.md
	$(PY) -m cardap.reasons guide docs/operations.md
