# InfiMed — two commands do all the set-up on a fresh machine:
#   make demo   # .venv + CPU stack, the tiny model (unless MODEL=...), then the product on 127.0.0.1
#   make test   # same set-up plus dev tools, then the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?=
PORT ?= 8000
TINY_DIR ?= .cache/tiny-model
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export VLLM_NO_USAGE_STATS ?= 1
export DO_NOT_TRACK ?= 1

.PHONY: setup setup-dev demo test test-fast lock clean help

help:
	@echo "make demo    run the product on the built-in tiny model (MODEL=<dir or hub id> for a real one)"
	@echo "make test    run the whole test suite"
	@echo "make lock    regenerate requirements/*.lock from pyproject.toml"

setup:
	@bash scripts/setup.sh cpu

setup-dev:
	@bash scripts/setup.sh dev
	@bash scripts/setup_browser.sh

demo: setup
	@bash scripts/demo.sh "$(MODEL)" "$(PORT)" "$(TINY_DIR)"

test: setup-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lock:
	$(PY) scripts/lock.py

clean:
	rm -rf .cache tests/artifacts
