# The two front-door commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is needed only to export the text demo model; 2.13.0 is the CPU build.
TORCH ?= torch==2.13.0
EXTRAS ?= demo,dev,jupyter

export WORKBENCH_HOME ?= $(CURDIR)/.workbench
export HF_HUB_OFFLINE := 1

.PHONY: install models browser demo test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

models: install
	$(BIN)/workbench models build

demo: models
	$(BIN)/workbench demo

# The dashboard's browser tests drive Debian's chromium (no browser is ever downloaded): installed here when
# missing. When it cannot be, those tests fail and say why; WORKBENCH_SKIP_BROWSER=1 skips them instead.
CHROMIUM := /usr/bin/chromium

browser:
ifeq ($(WORKBENCH_SKIP_BROWSER),1)
	@echo "WORKBENCH_SKIP_BROWSER=1: the browser tests are skipped"
else
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "could not install chromium (apt-get, as root on Debian): the browser tests will fail;" \
		        "install it, or set WORKBENCH_SKIP_BROWSER=1 to skip them"
endif

test: models browser
	$(BIN)/python -m pytest

bench: models
	$(BIN)/python benchmarks/bench_pipeline.py

lint: install
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .workbench .pytest_cache
