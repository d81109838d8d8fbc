# The two commands of the README's quick start are `make demo` and `make test`.
# Everything they need is installed from here: a virtualenv with the project,
# Kafka's jars from Maven Central, PostgreSQL from Debian's packages.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint services stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), "Python 3.11 or 3.12 is required (bytewax 0.21.1)"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

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
