# The two commands of the README's quick start are `make demo` and `make test`.
# Everything they need is installed from here: a virtualenv with the project,
# Kafka's jars from Maven Central, PostgreSQL from Debian's packages.
#
# The virtualenv holds exactly requirements/dev.txt, the lock file (pinned versions
# and their hashes; the image installs requirements/runtime.txt, the same pins less
# the dev tools), installed by the pip of requirements/pip.txt, plus the compiled
# core (core/, Rust): its wheel is built by core/wheel.sh with the maturin of
# requirements/maturin.txt and cargo (Rust >= 1.74; ~/.cargo/bin is looked in too),
# once per content of core/ (cached under ~/.cache/mutation-aggregator/core).
# `make lock` regenerates the locks from pyproject.toml and core/pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
PIP_LOCK := requirements/pip.txt
CORE_BUILD_LOCK := requirements/maturin.txt
CORE_SOURCES := $(shell find core -path core/target -prune -o -type f \( -name '*.rs' -o -name '*.toml' -o -name 'Cargo.lock' \) -print)
PIP_LOCKED := --quiet --disable-pip-version-check --require-hashes --only-binary :all:
UV := .local/uv/bin/uv

.PHONY: demo test unit lint services stop clean lock lock-upgrade

# A package the lock no longer names is uninstalled, so the venv equals the lock (and the core).
$(STAMP): pyproject.toml $(LOCK) $(PIP_LOCK) $(CORE_BUILD_LOCK) $(CORE_SOURCES) core/wheel.sh
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), "Python 3.11 or 3.12 is required (bytewax 0.21.1; the lock covers both)"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_LOCKED) -r $(PIP_LOCK)
	$(VENV)/bin/pip install $(PIP_LOCKED) -r $(LOCK)
	$(VENV)/bin/pip freeze --all --exclude-editable | sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*\).*/\1/p' | tr 'A-Z_.' 'a-z--' | sort > $(VENV)/.present
	sed -n 's/^\([a-z0-9][a-z0-9._-]*\)==.*/\1/p' $(LOCK) | sort > $(VENV)/.locked
	comm -23 $(VENV)/.present $(VENV)/.locked | grep -vx -e pip -e mutagg-core | xargs -r $(VENV)/bin/pip uninstall --quiet --yes
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	bash core/wheel.sh $(PYTHON) > $(VENV)/.core-wheel
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$$(cat $(VENV)/.core-wheel)"
	$(VENV)/bin/pip check
	touch $(STAMP)

# The lock tool, pinned with its hashes like everything else.
$(UV): requirements/uv.txt
	test -x .local/uv/bin/python || $(PYTHON) -m venv .local/uv
	.local/uv/bin/pip install $(PIP_LOCKED) -r requirements/uv.txt
	touch $(UV)

# Resolved once for every platform (markers pick per Python version and OS), from
# [project] dependencies plus [build-system] requires (the project is installed
# with --no-build-isolation); dev.txt is constrained to runtime.txt's pins. pip.txt
# pins the installer (a current pip installs the lock in half the CPU time of the
# pip that venv bundles with Python 3.11.7); maturin.txt the core's build tool
# (core/pyproject.toml's [build-system]; core/wheel.sh builds without isolation).
# Existing pins are kept while pyproject allows them; `make lock-upgrade` moves
# every package to the newest version allowed.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' --quiet
BUILD_REQUIRES := $(PYTHON) -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"], sep="\n")'

lock: $(UV)
	$(BUILD_REQUIRES) pyproject.toml | $(UV) pip compile pyproject.toml - $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(RUNTIME_LOCK)
	$(BUILD_REQUIRES) pyproject.toml | $(UV) pip compile pyproject.toml - --extra dev -c $(RUNTIME_LOCK) $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(LOCK)
	echo pip | $(UV) pip compile - $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(PIP_LOCK)
	$(BUILD_REQUIRES) core/pyproject.toml | $(UV) pip compile - $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(CORE_BUILD_LOCK)

lock-upgrade:
	$(MAKE) lock LOCK_UPGRADE=--upgrade

services:
	bash services/services.sh start

demo: $(STAMP) services
	$(VENV)/bin/mutagg demo

test: $(STAMP) services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

stop:
	bash services/services.sh stop
	bash services/cluster.sh stop

clean: stop
	rm -rf $(VENV) .local
