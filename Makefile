# Cairn developer entry points. Everything runs inside ./.venv, made on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-slow bench clean

$(BIN)/cairn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## demo: install Cairn and run its main job on a local datastore under ./demo-work
demo: $(BIN)/cairn
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh demo-work

## test: install test dependencies and run the whole test suite
test: $(BIN)/cairn
	$(BIN)/pytest -q

## test-slow: the long crash and soak tests as well
test-slow: $(BIN)/cairn
	$(BIN)/pytest -q --run-slow

## bench: Cairn against restic and borg on a 1 GiB mixed data set (BENCH_ARGS="--size-mb 256" etc.)
BENCH_ARGS ?=
bench: $(BIN)/cairn
	@if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq restic borgbackup; \
	  else echo "bench: restic or borg is missing and this is not root: the bench skips them"; fi; fi
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-work build *.egg-info
