#!/usr/bin/env bash
# Build the project image (Dockerfile) with BuildKit; prints the build time and the image size.
#   docker/build_image.sh [TAG]      default: $FRAUD_IMAGE or fraud-detection:<setup.py version>
# Env: BUILD_CACHE_KEEP (BuildKit cache kept after the build, default 12GB), BASE_IMAGE (default python:3.10-slim-bookworm), CA_BUNDLE (default $SSL_CERT_FILE when set: passed as the
# build secret ca_bundle, for networks that intercept TLS; never stored in the image), BUILD_ARGS (extra args).
# BuildKit: Debian's docker 20.10 client talks to the daemon's built-in BuildKit; a newer client needs its buildx
# plugin for that, so the 20.10 client is used when buildx is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^ *version="\([^"]*\)".*/\1/p' setup.py)
TAG=${1:-${FRAUD_IMAGE:-fraud-detection:$VERSION}}
BASE_IMAGE=${BASE_IMAGE:-python:3.10-slim-bookworm}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-}}
client=docker
if [ -x /usr/bin/docker ] && ! docker buildx version >/dev/null 2>&1; then client=/usr/bin/docker; fi
args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$TAG")
[ -n "$CA_BUNDLE" ] && [ -s "$CA_BUNDLE" ] && args+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
t0=$(date +%s)
echo "image: building $TAG from $BASE_IMAGE"
# shellcheck disable=SC2086
DOCKER_BUILDKIT=1 "$client" build --progress="${BUILD_PROGRESS:-plain}" "${args[@]}" ${BUILD_ARGS:-} .
t1=$(date +%s)
# Each rebuilt venv layer leaves GBs in BuildKit's cache: keep its most recently used BUILD_CACHE_KEEP (with the uv
# download cache), drop the rest.
"$client" builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-12GB}" >/dev/null 2>&1 || true
size=$(docker image inspect -f '{{.Size}}' "$TAG")
echo "image: $TAG built in $((t1 - t0)) s, $(awk -v s="$size" 'BEGIN{printf "%.0f MB (%.2f GB)", s/1e6, s/1e9}')"
