# Two commands on a fresh machine: `make demo` and `make test`.
# torch must be the local CPU wheel 2.13.0: it is installed first and pinned by
# constraints.txt so that chgnet (which asks for any torch) cannot pull a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo data clean-venv chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the HTML report's browser test (tests/agents/test_report.py); installed with apt
# when we are root on a Debian-like machine, otherwise that one test skips. Never fails the build.
# Headless Chromium for the report's browser test (tests/agents/test_report.py skips without it). Best effort:
# as root with apt, install it (updating the package lists first on a fresh container); never fail the build.
chromium:
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (timeout 300 apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q chromium >/dev/null 2>&1))) || true

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# An offline design session on a motif goal (the embedded planner; ~1 min on 2 idle cores): two rounds of
# 16 kagome-Mn crystals at 200 reverse steps, at most 8 relaxations, best-first; the ranked table and the
# report path end the output.
DEMO_GOAL := a kagome net of Mn with Sn or Ge, 6 atoms per cell, 16 candidates, relax at most 8
demo: $(STAMP)
	$(BIN)/tessera design "$(DEMO_GOAL)" --rounds 2 --steps 200

# Rebuild the shipped reference data from ../shared/data (developers only).
data: $(STAMP)
	$(BIN)/python data/build_reference_data.py --src ../shared/data --out data

clean-venv:
	rm -rf $(VENV)
