# umeter: every target sets itself up from nothing (creates .venv, installs pinned requirements).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUBS  := $(VENV)/stubs
N      ?= 100000
HOURS  ?= 24

.PHONY: setup test lint sim bench bench-flash bench-store bench-metering bench-seal bench-memory bench-ota \
        torture powercuts soak release micropython32 clean

$(STAMP): requirements.txt requirements-stubs.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@for port in esp32 rp2; do \
	  rm -rf $(STUBS)/$$port; \
	  $(BIN)/pip install -q --disable-pip-version-check --no-deps --target $(STUBS)/$$port \
	    $$(grep -E "^micropython-($$port|stdlib)-stubs==" requirements-stubs.txt) || exit 1; \
	done
	@touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest -n 2 tests

sim: setup
	$(BIN)/meterctl sim

bench: bench-flash bench-store bench-metering bench-seal bench-memory bench-ota

bench-flash: setup
	$(BIN)/python -m meterctl.bench flash

bench-store: setup
	$(BIN)/python -m meterctl.bench store

bench-metering: setup
	$(BIN)/python -m meterctl.bench metering

bench-seal: setup
	$(BIN)/python -m meterctl.bench seal

bench-memory: setup
	$(BIN)/python -m meterctl.bench memory

bench-ota: setup
	$(BIN)/python -m meterctl.bench ota
	$(BIN)/python -m meterctl.bench ota_install

torture: setup
	$(BIN)/python -m meterctl.torture --cuts $(N) --target all

# make release BOARD=<board> KEY="k1 k2" (signing key files) | THROWAWAY=1 (test release) [FORCE=1]
release: setup
	@test -n "$(BOARD)" || { echo "usage: make release BOARD=<board> [KEY=\"k1 k2\"] [THROWAWAY=1] [FORCE=1]"; exit 2; }
	$(BIN)/meterctl release --board $(BOARD) $(foreach k,$(KEY),--key $(k)) $(if $(THROWAWAY),--throwaway-keys) $(if $(FORCE),--force) --out dist

# The 32-bit test lane from the MicroPython sources (needs GitHub): .venv/micropython32/micropython
micropython32:
	bash host_tools/toolchain/build_micropython32.sh $(VENV)/micropython32/micropython

# 1,000 virtual-board power cuts with and without the power-fail warning (about 10 min)
powercuts: setup
	$(BIN)/python -m meterctl.powercuts --cuts 1000

soak: setup
	$(BIN)/python -m meterctl.soak --hours $(HOURS)

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis .ruff_cache
