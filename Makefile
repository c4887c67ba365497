# The two commands of the README: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test venv dev-venv lint bench

# Reinstall only when a requirements file changed.
$(VENV)/.runtime-installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt $(VENV)/.runtime-installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.runtime-installed
dev-venv: $(VENV)/.dev-installed

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) -m minoots_project.runall

test: lint
	@bash scripts/test-services.sh
	bash scripts/test.sh

# mypy in one run: the app packages --strict, tests/ in the default mode ([tool.mypy] in pyproject.toml).
lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy minoots_project timers actions integrations tests

bench: dev-venv
	@bash scripts/test-services.sh
	$(PY) bench/timers.py
