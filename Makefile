# camera-agent: the two-command quick start is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: all sysdeps benchdeps test fuzz reliability lint fmt demo bench bundle clean install uninstall

all: test

# System packages the targets rely on, installed only when missing (needs root on a fresh box).
sysdeps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root, or install:$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The virtual environment; rebuilt when pyproject.toml changes.
$(VENV): pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(VENV)

test: $(VENV) sysdeps
	$(BIN)/pytest $(PYTEST_ARGS)

# The fuzz tests with FUZZ_EXAMPLES (default 20) times their example budget.
FUZZ_EXAMPLES ?= 20
#  Then atheris (coverage-guided, libFuzzer) on each parser for FUZZ_SECONDS (default 30).
FUZZ_SECONDS ?= 30
fuzz: $(VENV)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -q -p no:randomly $(PYTEST_ARGS)
	$(BIN)/pip install -q atheris
	mkdir -p build/fuzz
	for t in $$($(BIN)/python -m tests.fuzz.atheris_harness --list 2>&1 | sed 's/^targets: //'); do \
	  echo "== atheris $$t"; \
	  $(BIN)/python -m tests.fuzz.atheris_harness $$t -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=build/fuzz/$$t- -print_final_stats=1 || exit 1; \
	done

# The fault, soak, fuzz and security tests; their figures fill the tables of docs/reliability.md.
RELIABILITY_TESTS := tests/hil/test_faults_cloud_camera.py tests/hil/test_faults_agent.py \
	tests/hil/test_soak_short.py tests/hil/test_security.py tests/hil/test_security_netns.py \
	tests/fuzz tests/hil/test_zz_no_secrets_in_logs.py
reliability: $(VENV) sysdeps
	rm -f build/reliability.json
	$(BIN)/pytest -q -p no:cacheprovider $(RELIABILITY_TESTS)
	$(BIN)/python -m tests.reliability_report build/reliability.json docs/reliability.md

lint: $(VENV)
	$(BIN)/ruff check agent firmware_tools tests
	$(BIN)/ruff format --check agent firmware_tools tests
	$(BIN)/mypy

fmt: $(VENV)
	$(BIN)/ruff format agent firmware_tools tests
	$(BIN)/ruff check --fix agent firmware_tools tests

demo: $(VENV)
	$(BIN)/camera-agent demo

# Baselines the benchmarks compare against (ffmpeg -c copy, socat).
benchdeps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v socat >/dev/null || missing="$$missing socat"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "benchmarks compare against:$$missing (not installed; some baselines fall back)" >&2; exit 0; fi; \
	  echo "installing benchmark baselines:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench: $(VENV) benchdeps
	$(BIN)/python -m tests.bench

# 64 relayed cameras for SOAK_SECONDS (default 1800) with camera reboots: bench/SOAK.md.
.PHONY: soak
soak: $(VENV)
	$(BIN)/python -m tests.soak

# A signed agent update bundle: the agent's wheel as payload (docs/updates.md).
#   make bundle KEY=keys/private.pem RELEASE=12 [HARDWARE="rpi4 rpi5"]
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
bundle: $(VENV)
	@test -n "$(KEY)" -a -n "$(RELEASE)" || { echo "usage: make bundle KEY=DIR/private.pem RELEASE=N [HARDWARE=...]" >&2; exit 2; }
	rm -rf build/wheel && mkdir -p dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w build/wheel .
	$(BIN)/camera-agent-fw build --key $(KEY) --product camera-agent --version $(VERSION) \
	  --release $(RELEASE) $(foreach h,$(HARDWARE),--hardware $(h)) \
	  --payload build/wheel/camera_agent-$(VERSION)-py3-none-any.whl -o dist/camera-agent-$(VERSION).bundle

# The agent as a systemd service (docs/install.md); the logic is in systemd/install.sh.
#   sudo make install [PROFILE=raspberry-pi-4] [PREFIX=/opt/camera-agent]
#   make install DESTDIR=/tmp/stage PROFILE=x86-64-nvr    (staged: nothing is started)
#   sudo make uninstall [PURGE=1]                         (PURGE: config, state, logs, user too)
PREFIX ?= /opt/camera-agent
install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PROFILE="$(PROFILE)" HW_JSON="$(HW_JSON)" \
	  INSTALL_PYTHON="$(INSTALL_PYTHON)" PIP_ARGS="$(PIP_ARGS)" systemd/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PURGE="$(PURGE)" systemd/install.sh uninstall

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
