# The fraud-detection platform's one image: the pipeline (`fraudctl pipeline run`), the Airflow components
# (webserver, scheduler, Celery workers: `airflow ...`), the local TF-Serving-compatible model server
# (`fraudctl serve`) and the decision service (`fraudctl decide serve`). See docs/containers.md.
#
#   make image          (docker/build_image.sh: BuildKit, the CA of a TLS-intercepting proxy as a build secret)
#   docker run --rm fraud-detection:0.1.0 --help
#
# Two stages: the builder installs uv and the locked dependencies (requirements/lock.txt, exactly as
# scripts/bootstrap.sh does for .venv) and the project into /opt/venv; the final stage is the slim Python base plus
# that venv, tini, the run-time files and a non-root user. No compiler, uv or pip cache in the final stage, nothing
# secret: settings and passwords come from the environment at run time.
ARG BASE_IMAGE=python:3.10-slim-bookworm

FROM ${BASE_IMAGE} AS deps
ARG UV_VERSION=0.13.10
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# ca_bundle (optional build secret): a CA bundle to trust when the network intercepts TLS; mounted for this step
# only, never written to a layer.
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    pip install --no-cache-dir --root-user-action=ignore "uv==${UV_VERSION}" && uv --version
# A C/C++ toolchain for the few locked packages published as source only (pyfarmhash, ...): builder stage only.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential; \
    rm -rf /var/lib/apt/lists/*
RUN uv venv --python /usr/local/bin/python3.10 /opt/venv
# The dependencies first, alone: this layer is rebuilt only when the lock changes. --compile-bytecode: see
# scripts/bootstrap.sh (importing TFX without .pyc costs 30 s per process). uv's download cache lives in a
# BuildKit cache mount, so a changed lock downloads only what changed.
COPY requirements/lock.txt /src/requirements/lock.txt
RUN --mount=type=cache,target=/root/.cache/uv,sharing=locked \
    --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi; \
    uv pip sync --compile-bytecode --python /opt/venv/bin/python /src/requirements/lock.txt
FROM deps AS builder
# The project itself, not editable (setuptools is in the lock: no build isolation, no download).
COPY setup.py trainer_module.py transform_module.py /src/
COPY fraud /src/fraud
COPY fraudctl /src/fraudctl
COPY pipeline /src/pipeline
COPY components /src/components
COPY serving /src/serving
COPY decision /src/decision
# Its files are also collected under /opt/project (same paths): the final stage copies them as their own layer.
COPY docker/copy_installed.py /src/docker/
RUN uv pip install --no-deps --no-build-isolation --compile-bytecode --python /opt/venv/bin/python /src \
    && /opt/venv/bin/fraudctl --help >/dev/null \
    && /opt/venv/bin/python /src/docker/copy_installed.py fraud-detection-peru /opt/project

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="fraud-detection" \
      org.opencontainers.image.description="TFX fraud-detection platform: pipeline, Airflow, model server, decision service"
# tini as PID 1: signals reach the service, and the processes TFX/Beam/Celery leave behind are reaped.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends tini; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 fraud; \
    useradd --uid 10001 --gid 10001 --home-dir /home/fraud --create-home --shell /bin/bash fraud; \
    mkdir -p /srv/fraud /opt/airflow/logs; \
    chown -R fraud:fraud /srv/fraud /opt/airflow
# The dependencies (a layer rebuilt only when the lock changes), then the project's own files on top.
COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /opt/project/ /
# Run-time files, owned by root and read-only for the service user: the curated schema, the serving configs,
# the Airflow DAG file (its dags folder), the entrypoint, the health check and the stack's alert webhook receiver.
COPY schema /app/schema
COPY serving/models.config serving/monitoring.config serving/batching.config /app/serving/
COPY pipeline/airflow_dag.py /app/dags/
COPY docker/entrypoint.sh docker/healthcheck.py docker/alert_webhook.py /app/docker/
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FRAUD_SCHEMA_FILE=/app/schema/schema.pbtxt \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
USER 10001:10001
WORKDIR /home/fraud
# 8500/8501 model server (gRPC/REST), 8600 decision service, 8080 Airflow webserver, 8793 Airflow worker logs.
EXPOSE 8500 8501 8600 8080 8793
# Checks the URLs of $FRAUD_HEALTHCHECK_URL (set per service by docker-compose.yml); nothing set: healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["tini", "--", "/app/docker/entrypoint.sh"]
CMD ["fraudctl", "--help"]
