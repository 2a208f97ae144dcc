# Everyday commands, and the one definition of each check: scripts/test (what
# CI runs, via .ci/run) installs the requirements and then calls these
# targets. Run from the repository root, or `make -C <root> <target>`.
#
#   make dev            build and install the extension, quickly (no LTO)
#   make lint           formatting, clippy, layers, ruff, mypy, stubtest
#   make test-python    the pytest suite (against the installed ottla)
#   make all            install, lint, Rust and Python tests, quick benchmark
#
# stubtest and the pytest suite check the *installed* ottla: after changing
# Rust code, `make dev` (or `make install`) first.

PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check
# Python code ruff checks and formats.
PY_PATHS = python tests bench examples

.PHONY: all lint fmt-check clippy layers ruff ruff-format-check mypy stubtest \
	test-rust test-python bench-quick install dev format help

help:
	@sed -n '5,8p' Makefile

all: install lint test-rust test-python bench-quick

# ---- lint ---------------------------------------------------------------------

lint: fmt-check clippy layers ruff ruff-format-check mypy stubtest

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

# What each crate may depend on, beyond what Cargo states (scripts/check-layers).
layers:
	./scripts/check-layers

ruff:
	$(PYTHON) -m ruff check $(PY_PATHS)

ruff-format-check:
	$(PYTHON) -m ruff format --check $(PY_PATHS)

# Files, strictness and the per-module relaxations: [tool.mypy] in pyproject.toml.
mypy:
	$(PYTHON) -m mypy

# The stub (python/ottla/_core.pyi) against the installed native module.
stubtest:
	$(PYTHON) -m mypy.stubtest ottla._core --allowlist scripts/stubtest-allowlist.txt

# Apply what fmt-check, ruff and ruff-format-check check.
format:
	cargo fmt --all
	$(PYTHON) -m ruff check --fix $(PY_PATHS)
	$(PYTHON) -m ruff format $(PY_PATHS)

# ---- tests --------------------------------------------------------------------

test-rust:
	cargo test --workspace

test-python:
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

# Numbers only, no assertions: run so that the benchmark cannot rot.
bench-quick:
	$(PYTHON) bench/run.py --quick --out "$$(mktemp -d)"

# ---- build --------------------------------------------------------------------

# The release build, as users get it.
install:
	$(PIP) install -q --force-reinstall --no-deps .

# A faster build for iteration: release without LTO and with parallel codegen
# (minutes less to link; a little slower code), built incrementally in
# target/dev-install so it does not invalidate the release build's cache.
dev:
	CARGO_TARGET_DIR="$${CARGO_TARGET_DIR:-$(CURDIR)/target/dev-install}" \
	CARGO_PROFILE_RELEASE_LTO=off \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	CARGO_PROFILE_RELEASE_INCREMENTAL=true \
	$(PIP) install -q --force-reinstall --no-deps .
