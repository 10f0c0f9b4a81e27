# The README's two commands are `make demo` and `make test`; both set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned on purpose: here it resolves to a local CPU wheel; a looser range would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test test-timing lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@

# Fashion-MNIST from Debian's package when apt-get can install it; otherwise rlal searches
# --data-dir / $$RLAL_DATA and finally downloads with checksums, so a failure here is only a note.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) \
	  || echo "note: could not install dataset-fashion-mnist; rlal will look elsewhere or download it"; \
	fi

# --overwrite: `make demo` replaces the previous demo run in runs/demo (`rlal demo` alone refuses to).
demo: setup data
	$(BIN)/rlal demo --overwrite

test: setup data
	$(BIN)/python -m pytest -q

# Tests that time real models (the latency table against a cut model): too noisy for a shared CI machine.
test-timing: setup
	$(BIN)/python -m pytest -q -m timing

lint: setup
	$(BIN)/ruff check .

bench: setup data
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
