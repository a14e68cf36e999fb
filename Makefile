# Two commands do all the set-up (see README): `make train` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,zh,eval,lint,tensorboard,serve,edge]'
	touch $@

train: $(VENV)/.installed
	$(PY) -m textgen.train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile $(ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow $(ARGS)

# ruff's linter and formatter, configured in pyproject.toml; `ruff format .` and
# `ruff check --fix .` repair most of what this reports.
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info
