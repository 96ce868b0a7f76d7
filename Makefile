# The two commands of the README: `make demo` (main job) and `make test` (the whole suite).
# Both create the virtual environment and install the project into it on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned to the CPU build; a wheel directory on this machine is used when present.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: demo test lint typecheck protos protos-check bench clean compose-smoke compose-smoke-full compose-smoke-cluster

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(FIND_LINKS) -e '.[dev,train]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m localrun.demo

test: $(STAMP)
	$(PY) -m protos.generate --check
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy cloud_service device_agent tandem_core training simulator localrun loadtest protos/vectors.py protos/generate.py protos/auth.py protos/actions.py

protos: $(STAMP)
	$(PY) -m protos.generate

# the serving benchmarks on the models `make demo` trains (run it once first)
MODELS ?= artifacts/demo
bench: $(STAMP)
	$(PY) -m localrun.bench_cloud --bundle $(MODELS)/ranker/serving --device-models $(MODELS)/device
	$(PY) -m localrun.bench_agent --bundle $(MODELS)/ranker/serving --device $(MODELS)/device

# the stack with a real Docker engine (started, and docker.io installed, if none runs here):
# fast = tiny untrained models (CI, minutes); full = the default world's trained models (~20 min)
compose-smoke: $(STAMP)
	$(PY) -m localrun.compose_smoke --mode fast

compose-smoke-cluster: $(STAMP)
	$(PY) -m localrun.compose_smoke --mode fast --cluster --json artifacts/compose_smoke_cluster.json

compose-smoke-full: $(STAMP)
	$(PY) -m localrun.compose_smoke --mode full --json artifacts/compose_smoke_full.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache artifacts
