# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv (Python 3.10, locked dependencies via uv) when it is missing or out of date.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# fraud.features.MODEL_NAME (tests/unit/test_docs_claims.py holds them equal)
MODEL_NAME := fraud_detector
PYTEST_ARGS ?=

.PHONY: demo test test-fast setup system-deps lock clean help serve decide test-serving bench-serving airflow stream-demo image stack stack-down

help:
	@echo "make demo   - set up, generate data, run the whole TFX pipeline, print the summary"
	@echo "make test   - set up, then run every test (slow ones included)"
	@echo "make airflow - local Airflow (UI http://localhost:8080) running the pipeline's DAG; see docs/airflow.md"
	@echo "make serve  - serve the demo's pushed model (TF Serving REST :8501, gRPC :8500, Prometheus metrics)"
	@echo "make decide - the decision service on :8600 in front of make serve (POST /v1/decisions)"
	@echo "make stream-demo - transactions through a Redis stream: decisions, alerts, landing, retraining (after make demo)"
	@echo "make lock   - recompile requirements/lock.txt from requirements/requirements.in"
	@echo "make image  - build the project's container image (Dockerfile; docs/containers.md)"
	@echo "make stack  - the whole platform in containers (Airflow on Celery, model server, decisions, Prometheus); make stack-down stops it"

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
	@$(VENV)/bin/fraudctl decide replay --data $(DEMO_DIR)/data --model-base $(DEMO_DIR)/serving_models/$(MODEL_NAME)

# The streaming loop (scripts/stream_demo.py): needs Debian's redis-server (make system-deps) and make demo's model.
stream-demo: setup
	@test -d $(DEMO_DIR)/serving_models/$(MODEL_NAME) || $(MAKE) demo
	@$(PY) scripts/stream_demo.py --data $(DEMO_DIR)/data --model-base $(DEMO_DIR)/serving_models/$(MODEL_NAME) \
		--pipeline-root $(DEMO_DIR)/pipeline --work runs/stream-demo

test: setup system-deps
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lock:
	@bash scripts/bootstrap.sh --lock-only

clean:
	rm -rf runs .pytest_cache

serve: setup
	@$(VENV)/bin/fraudctl serve --model-base $(DEMO_DIR)/serving_models/$(MODEL_NAME) --monitoring-config-file serving/monitoring.config

# The decision service in front of `make serve` (run that first, in another terminal).
decide: setup
	@$(VENV)/bin/fraudctl decide serve --serving grpc://127.0.0.1:8500 --model-dir $(DEMO_DIR)/serving_models/$(MODEL_NAME) $(DECIDE_ARGS)

test-serving: setup system-deps
	@$(PY) -m pytest tests/serving $(PYTEST_ARGS)

bench-serving: setup
	@mkdir -p bench/results
	@$(PY) bench/serving_bench.py --model-base $(DEMO_DIR)/serving_models/$(MODEL_NAME) --json bench/results/serving.json

airflow: setup
	@bash scripts/airflow_standalone.sh

# ---- containers (issue 17; docs/containers.md) --------------------------------------------------------------
# make image: the project image (BuildKit; the local base images first where no registry answers).
# make stack: engine, images, .env, docker-compose up, wait for healthy (docker/stack.sh). make stack-down: stop it.
image:
	@bash scripts/docker_engine.sh
	@bash docker/base/build_base_images.sh python
	@bash docker/build_image.sh

stack:
	@bash docker/stack.sh up

stack-down:
	@bash docker/stack.sh down
# ---- end containers --------------------------------------------------------------------------------------------
