# Cairn developer entry points. Everything runs inside ./.venv, made on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-slow bench clean

# System packages for pxar trees and mounts: libfuse3 (pyfuse3 builds against it), fuse3
# (fusermount3), acl (setfacl, used by the ACL tests). Installed only when missing and root.
SYSTEM_PACKAGES := libfuse3-dev fuse3 pkg-config acl

$(BIN)/cairn: pyproject.toml
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "make: missing $$missing (not root): mounts and ACL tests are skipped"; fi; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,mount]' || $(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q src >/dev/null
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
	@# Commands are timed from their start: compile Cairn's modules now, or with
	@# PYTHONDONTWRITEBYTECODE set every command would compile them again (~0.1 s each).
	$(BIN)/python -m compileall -q src >/dev/null
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-work build *.egg-info
