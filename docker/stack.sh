#!/usr/bin/env bash
# The container stack (docker-compose.yml), as `make stack` / `make stack-down` run it.
#   docker/stack.sh up       engine up (scripts/docker_engine.sh); every image the compose file names that is
#                            missing: pulled, or where no registry answers, its local stand-in built
#                            (docker/base/build_base_images.sh); the project image built (cached: a second);
#                            .env written with generated secrets when missing; `up -d`; waits until every service
#                            is healthy, printing progress; prints the URLs.
#   docker/stack.sh down     stops and removes the containers (volumes are kept; STACK_DOWN_ARGS=-v drops them)
#   docker/stack.sh env      only write the env file (ENV_FILE) when it is missing
#   docker/stack.sh status   one line per service
#   docker/stack.sh compose ARGS...   docker-compose with this stack's project, env file and files
# Env: ENV_FILE (default .env), COMPOSE_PROJECT_NAME (default: the env file's, else fraud), STACK_LOCAL=1|0 (use
# docker-compose.local.yml: default 1 unless tensorflow/serving:2.16.1 is present or can be pulled),
# STACK_WAIT_SECONDS (default 900), SKIP_IMAGE_BUILD=1 (use FRAUD_IMAGE as it is), STACK_EXTRA_FILES (more compose
# files after those, space-separated: tests/docker/test_stack.py's settings of the DAG under test).
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=${ENV_FILE:-.env}
WAIT_SECONDS=${STACK_WAIT_SECONDS:-900}
say() { echo "stack: $*" >&2; }

env_value() {  # NAME: from the environment, else the env file
  local name=$1
  if [ -n "${!name:-}" ]; then echo "${!name}"; return; fi
  [ -f "$ENV_FILE" ] && sed -n "s/^${name}=//p" "$ENV_FILE" | tail -n1
}

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

write_env() {
  [ -f "$ENV_FILE" ] && return 0
  say "writing $ENV_FILE with generated secrets (from .env.example; keep it: the databases are initialised with them)"
  local fernet; fernet=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
  local line name
  umask 077
  while IFS= read -r line; do
    name=${line%%=*}
    case "$line" in
      AIRFLOW_FERNET_KEY=*) echo "AIRFLOW_FERNET_KEY=$fernet" ;;
      *=change-me) echo "$name=$(secret)" ;;
      *) echo "$line" ;;
    esac
  done <.env.example >"$ENV_FILE"
}

project() { local p; p=$(env_value COMPOSE_PROJECT_NAME); echo "${p:-fraud}"; }

use_local() {
  if [ -n "${STACK_LOCAL:-}" ]; then [ "$STACK_LOCAL" = 1 ]; return; fi
  ! docker image inspect tensorflow/serving:2.16.1 >/dev/null 2>&1
}

compose_files() {
  local files=(-f docker-compose.yml) extra
  use_local && files+=(-f docker-compose.local.yml)
  for extra in ${STACK_EXTRA_FILES:-}; do files+=(-f "$extra"); done
  echo "${files[@]}"
}

dc() {  # docker-compose for this stack
  # shellcheck disable=SC2046
  docker-compose -p "$(project)" --env-file "$ENV_FILE" $(compose_files) "$@"
}

# Official image -> the name of its stand-in in docker/base/build_base_images.sh.
standin() {
  case $1 in
    debian:bookworm-slim) echo debian ;;
    python:3.10-slim-bookworm) echo python ;;
    postgres:*) echo postgres ;;
    redis:*) echo redis ;;
    prom/prometheus:*) echo prometheus ;;
    prom/alertmanager:*) echo alertmanager ;;
    *) echo "" ;;
  esac
}

ensure_image() {  # an external image: present, pulled, or its local stand-in built
  local image=$1 name
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  if timeout 600 docker pull -q "$image" >/dev/null 2>&1; then
    say "$image: pulled"
    return 0
  fi
  name=$(standin "$image")
  if [ -z "$name" ]; then
    say "$image: cannot be pulled and has no local stand-in"
    return 1
  fi
  say "$image: no registry answers; building the local stand-in"
  bash docker/base/build_base_images.sh "$name"
}

ensure_images() {
  local image fraud_image; fraud_image=$(env_value FRAUD_IMAGE); fraud_image=${fraud_image:-fraud-detection:0.1.0}
  # The model server first: whether it can be had decides the local override.
  if [ -z "${STACK_LOCAL:-}" ] && ! docker image inspect tensorflow/serving:2.16.1 >/dev/null 2>&1; then
    if timeout 900 docker pull -q tensorflow/serving:2.16.1 >/dev/null 2>&1; then say "tensorflow/serving:2.16.1: pulled"; fi
  fi
  if use_local; then say "model server: fraudctl serve (docker-compose.local.yml)"; else say "model server: tensorflow/serving:2.16.1"; fi
  ensure_image python:3.10-slim-bookworm
  for image in $(dc config 2>/dev/null | awk '$1 == "image:" {print $2}' | sort -u); do
    [ "$image" = "$fraud_image" ] && continue
    ensure_image "$image"
  done
  if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
    FRAUD_IMAGE=$fraud_image bash docker/build_image.sh "$fraud_image" >/tmp/fraud-image-build.log 2>&1 || {
      tail -n 30 /tmp/fraud-image-build.log >&2; say "image build failed (log: /tmp/fraud-image-build.log)"; return 1; }
    say "$(tail -n1 /tmp/fraud-image-build.log | sed 's/^image: //')"
  fi
}

# One line per container: service state health (- without a health check: the one-offs) exit-code.
service_states() {
  local id
  for id in $(dc ps -q -a 2>/dev/null || dc ps -q); do
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}' "$id"
  done | sort
}

wait_healthy() {
  local t0 now waiting failed line name state health code
  t0=$(date +%s)
  while :; do
    waiting=(); failed=()
    while read -r name state health code; do
      [ -z "$name" ] && continue
      if [ "$health" = - ]; then  # one-off services (no health check): done when exited 0
        if [ "$state" = exited ]; then [ "$code" = 0 ] || failed+=("$name(exit $code)"); else waiting+=("$name($state)"); fi
      elif [ "$health" = unhealthy ] || [ "$state" = exited ] || [ "$state" = dead ]; then
        failed+=("$name($state/$health)")
      elif [ "$health" != healthy ]; then
        waiting+=("$name($health)")
      fi
    done < <(service_states)
    now=$(( $(date +%s) - t0 ))
    if [ ${#failed[@]} -gt 0 ] && [ $now -gt 60 ]; then
      say "not healthy after ${now}s: ${failed[*]} (logs: docker/stack.sh compose logs SERVICE)"
      return 1
    fi
    if [ ${#waiting[@]} -eq 0 ] && [ ${#failed[@]} -eq 0 ]; then
      say "every service healthy after ${now}s"
      return 0
    fi
    if [ $now -ge "$WAIT_SECONDS" ]; then
      say "timed out after ${now}s waiting for: ${waiting[*]} ${failed[*]}"
      return 1
    fi
    say "${now}s: waiting for ${waiting[*]}${failed:+ (failing: ${failed[*]})}"
    sleep 10
  done
}

urls() {
  local p
  p=$(env_value AIRFLOW_PORT); echo "  Airflow UI        http://127.0.0.1:${p:-8080}  (user $(env_value AIRFLOW_ADMIN_USER), password in $ENV_FILE)"
  p=$(env_value REST_PORT); echo "  model server REST http://127.0.0.1:${p:-8501}/v1/models/fraud_detector"
  p=$(env_value GRPC_PORT); echo "  model server gRPC 127.0.0.1:${p:-8500}"
  p=$(env_value DECISION_PORT); echo "  decisions         http://127.0.0.1:${p:-8600}/v1/decisions  (/healthz, /metrics)"
  p=$(env_value PROMETHEUS_PORT); echo "  Prometheus        http://127.0.0.1:${p:-9090}  (targets: /targets, alerts: /alerts)"
  p=$(env_value ALERTMANAGER_PORT); echo "  Alertmanager      http://127.0.0.1:${p:-9093}"
}

case ${1:-up} in
  up)
    T0=$(date +%s)
    bash scripts/docker_engine.sh
    write_env
    ensure_images
    say "starting project $(project): $(compose_files)"
    T1=$(date +%s)
    dc up -d --remove-orphans
    wait_healthy || { service_states >&2; exit 1; }
    say "up in $(( $(date +%s) - T0 ))s ($(( $(date +%s) - T1 ))s from 'up' to healthy)"
    urls
    echo "  no model yet? docs/containers.md#a-model: train one with the DAG, or copy a pushed model into the volume"
    ;;
  down)
    docker version >/dev/null 2>&1 || { say "no Docker daemon answers: nothing to stop"; exit 0; }
    [ -f "$ENV_FILE" ] || { say "no $ENV_FILE: nothing was started from here"; exit 0; }
    # shellcheck disable=SC2086
    dc down --remove-orphans ${STACK_DOWN_ARGS:-}
    ;;
  env) write_env ;;
  status) service_states ;;
  compose) shift; dc "$@" ;;
  *) echo "usage: docker/stack.sh up|down|env|status|compose ARGS" >&2; exit 2 ;;
esac
