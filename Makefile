# The two commands of the README's quick start are `make demo` and `make test`.
# Everything they need is installed from here: a virtualenv with the project,
# Kafka's jars from Maven Central, PostgreSQL from Debian's packages.
#
# The virtualenv holds exactly requirements/dev.txt, the lock file (pinned versions
# and their hashes; the image installs requirements/runtime.txt, the same pins less
# the dev tools), installed by the pip of requirements/pip.txt. `make lock`
# regenerates them from pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
PIP_LOCK := requirements/pip.txt
PIP_LOCKED := --quiet --disable-pip-version-check --require-hashes --only-binary :all:
UV := .local/uv/bin/uv

.PHONY: demo test unit lint services stop clean lock lock-upgrade

# A package the lock no longer names is uninstalled, so the venv equals the lock.
$(STAMP): pyproject.toml $(LOCK) $(PIP_LOCK)
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), "Python 3.11 or 3.12 is required (bytewax 0.21.1; the lock covers both)"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_LOCKED) -r $(PIP_LOCK)
	$(VENV)/bin/pip install $(PIP_LOCKED) -r $(LOCK)
	$(VENV)/bin/pip freeze --all --exclude-editable | sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*\).*/\1/p' | tr 'A-Z_.' 'a-z--' | sort > $(VENV)/.present
	sed -n 's/^\([a-z0-9][a-z0-9._-]*\)==.*/\1/p' $(LOCK) | sort > $(VENV)/.locked
	comm -23 $(VENV)/.present $(VENV)/.locked | grep -vx pip | xargs -r $(VENV)/bin/pip uninstall --quiet --yes
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
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
# pip that venv bundles with Python 3.11.7).
# Existing pins are kept while pyproject allows them; `make lock-upgrade` moves
# every package to the newest version allowed.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' --quiet
BUILD_REQUIRES := $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock: $(UV)
	$(BUILD_REQUIRES) | $(UV) pip compile pyproject.toml - $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(RUNTIME_LOCK)
	$(BUILD_REQUIRES) | $(UV) pip compile pyproject.toml - --extra dev -c $(RUNTIME_LOCK) $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(LOCK)
	echo pip | $(UV) pip compile - $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(PIP_LOCK)

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
