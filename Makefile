# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv (Python 3.10, locked dependencies via uv) when it is missing or out of date.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-fast setup system-deps lock clean help serve decide test-serving bench-serving airflow

help:
	@echo "make demo   - set up, generate data, run the whole TFX pipeline, print the summary"
	@echo "make test   - set up, then run every test (slow ones included)"
	@echo "make airflow - local Airflow (UI http://localhost:8080) running the pipeline's DAG; see docs/airflow.md"
	@echo "make serve  - serve the demo's pushed model (TF Serving REST :8501, gRPC :8500, Prometheus metrics)"
	@echo "make decide - the decision service on :8600 in front of make serve (POST /v1/decisions)"
	@echo "make lock   - recompile requirements/lock.txt from requirements/requirements.in"

setup: $(STAMP)

$(STAMP): requirements/lock.txt setup.py scripts/bootstrap.sh
	@bash scripts/bootstrap.sh $(VENV)
	@touch $(STAMP)

system-deps:
	@bash scripts/system_deps.sh

demo: setup
	@rm -rf $(DEMO_DIR)
	@$(VENV)/bin/fraudctl generate --out $(DEMO_DIR)/data
	@$(VENV)/bin/fraudctl pipeline run --data $(DEMO_DIR)/data --root $(DEMO_DIR)/pipeline \
		--serving-dir $(DEMO_DIR)/serving_models; status=$$?; \
	if [ $$status -eq 3 ]; then echo "(exit 3: model not blessed, nothing pushed)"; fi; \
	if [ $$status -ne 0 ]; then exit $$status; fi
	@$(VENV)/bin/fraudctl decide replay --data $(DEMO_DIR)/data --model-base $(DEMO_DIR)/serving_models/fraud_detector

test: setup system-deps
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lock:
	@bash scripts/bootstrap.sh --lock-only

clean:
	rm -rf runs .pytest_cache

serve: setup
	@$(VENV)/bin/fraudctl serve --model-base $(DEMO_DIR)/serving_models/fraud_detector --monitoring-config-file serving/monitoring.config

# The decision service in front of `make serve` (run that first, in another terminal).
decide: setup
	@$(VENV)/bin/fraudctl decide serve --serving grpc://127.0.0.1:8500 --model-dir $(DEMO_DIR)/serving_models/fraud_detector $(DECIDE_ARGS)

test-serving: setup system-deps
	@$(PY) -m pytest tests/serving $(PYTEST_ARGS)

bench-serving: setup
	@mkdir -p bench/results
	@$(PY) bench/serving_bench.py --model-base $(DEMO_DIR)/serving_models/fraud_detector --json bench/results/serving.json

airflow: setup
	@bash scripts/airflow_standalone.sh
