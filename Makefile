# camera-agent: the two-command quick start is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: all venvdeps sysdeps benchdeps test fuzz reliability lint fmt demo bench bundle clean install uninstall

all: test

# System packages, per target, each list written once as PACKAGE:COMMAND pairs (the package is
# missing when COMMAND is; `ensurepip` stands for the interpreter's ensurepip and venv modules).
#   venvdeps   .venv and `make demo`: python3-venv only (PyAV brings its own FFmpeg libraries)
#   sysdeps    `make test`, `make reliability`: also iproute2 (network namespaces), chromium
#              (the status page in a browser), systemd (systemd-analyze: the install test), and
#              what builds and serves the third-party ONVIF server of tests/peers (gcc, make,
#              its libraries' headers, lighttpd); a COMMAND starting with / is a file to look for
#   benchdeps  `make bench`: the baselines ffmpeg (-c copy) and socat; optional
VENV_PACKAGES := python3-venv:ensurepip
TEST_PACKAGES := iproute2:ip chromium:chromium systemd:systemd-analyze gcc:gcc make:make \
	libtomcrypt-dev:/usr/include/tomcrypt.h libjson-c-dev:/usr/include/json-c/json.h \
	zlib1g-dev:/usr/include/zlib.h lighttpd:lighttpd
BENCH_PACKAGES := ffmpeg:ffmpeg socat:socat

# $(call ensure,WHAT,PACKAGE:COMMAND ...,required|optional): install the missing packages with
# apt-get as root; anyone else gets their names (and, when required, an error).
define ensure
	@have() { if [ "$$1" = ensurepip ]; then $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; \
	          elif [ "$${1#/}" != "$$1" ]; then [ -e "$$1" ]; \
	          else command -v "$$1" >/dev/null; fi; }; \
	missing=""; \
	for pair in $(2); do have "$${pair#*:}" || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    if [ "$(3)" = optional ]; then echo "$(1): not installed:$$missing (going on without)" >&2; exit 0; fi; \
	    echo "$(1) needs:$$missing; run as root, or install them" >&2; exit 1; \
	  fi; \
	  echo "$(1): installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

venvdeps:
	$(call ensure,make .venv (and demo),$(VENV_PACKAGES),required)

sysdeps: venvdeps
	$(call ensure,make test,$(TEST_PACKAGES),required)

# The virtual environment; rebuilt when pyproject.toml changes.
$(VENV): pyproject.toml
	@$(MAKE) --no-print-directory venvdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(VENV)

# The long fault-injection, soak and shutdown runs are left to `make reliability` (CI runs both):
# `make test` stays under 15 minutes on 2 cores.
LONG_TESTS := tests/hil/test_faults_cloud_camera.py tests/hil/test_faults_agent.py \
	tests/hil/test_soak_short.py tests/hil/test_shutdown.py tests/hil/test_demo_mixed.py
test: $(VENV) sysdeps
	$(BIN)/pytest $(addprefix --ignore=,$(LONG_TESTS)) $(PYTEST_ARGS)

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

# The fault, soak, fuzz and security tests (their figures fill the tables of docs/reliability.md),
# and the mixed-fleet demo (every vendor persona, about a minute).
RELIABILITY_TESTS := tests/hil/test_faults_cloud_camera.py tests/hil/test_faults_agent.py \
	tests/hil/test_soak_short.py tests/hil/test_security.py tests/hil/test_security_netns.py \
	tests/fuzz tests/hil/test_log_secrets.py tests/hil/test_shutdown.py tests/hil/test_demo_mixed.py
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

FLEET ?= default
demo: $(VENV)
	$(BIN)/camera-agent demo --fleet $(FLEET)

# Baselines the benchmarks compare against (ffmpeg -c copy, socat); optional.
benchdeps:
	$(call ensure,make bench,$(BENCH_PACKAGES),optional)

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
