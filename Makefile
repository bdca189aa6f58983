# The two front-door commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is needed only to export the text demo model; 2.13.0 is the CPU build.
TORCH ?= torch==2.13.0
EXTRAS ?= demo,dev,jupyter

export WORKBENCH_HOME ?= $(CURDIR)/.workbench
export HF_HUB_OFFLINE := 1

.PHONY: install models browser demo test bench peers lint clean

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

# The peers benchmarks/peers/bench_peers.py compares the workbench with, each in a virtualenv of its own (git-ignored;
# never needed by `make test`): MLServer 1.7.1 (its model loading breaks on uvloop 0.23) and Ray Serve 2.60, both
# on ONNX Runtime's CPU build. matplotlib (the latency plot) goes into Ray's, as .venv has none.
PEERS := benchmarks/peers
PEER_ORT ?= onnxruntime==1.31.1

peers: models
	@test -x $(PEERS)/.venv-mlserver/bin/mlserver || { $(PYTHON) -m venv $(PEERS)/.venv-mlserver \
		&& $(PEERS)/.venv-mlserver/bin/python -m pip install --quiet --upgrade pip \
		&& $(PEERS)/.venv-mlserver/bin/python -m pip install --quiet "mlserver==1.7.1" "uvloop==0.21.0" \
		   "$(PEER_ORT)" tokenizers; } || { rm -rf $(PEERS)/.venv-mlserver; exit 1; }
	@test -x $(PEERS)/.venv-ray/bin/serve || { $(PYTHON) -m venv $(PEERS)/.venv-ray \
		&& $(PEERS)/.venv-ray/bin/python -m pip install --quiet --upgrade pip \
		&& $(PEERS)/.venv-ray/bin/python -m pip install --quiet "ray[serve]==2.60.*" "$(PEER_ORT)" tokenizers \
		   matplotlib; } || { rm -rf $(PEERS)/.venv-ray; exit 1; }
	@echo "peers ready: $(PEERS)/.venv-mlserver, $(PEERS)/.venv-ray (run: $(BIN)/python $(PEERS)/bench_peers.py)"

lint: install
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .workbench .pytest_cache
