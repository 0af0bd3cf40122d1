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

clean:
	rm -rf $(VENV) demo-work build *.egg-info
