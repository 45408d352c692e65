#!/usr/bin/env bash
# A running Docker engine for the container stack (make image / make stack, tests/docker):
#   - installs Debian's docker.io (dockerd 20.10), docker-compose (1.29) and debootstrap (the local base images)
#     when they are missing and we are root with apt-get;
#   - starts dockerd when no daemon answers (no systemd on these machines: started in the background, log in
#     $DOCKERD_LOG), and waits until it does.
# Idempotent: a second call with the engine up returns at once. Exit 0 when a daemon answers, 1 otherwise (the
# reason on stderr). Prints the docker client's and the daemon's versions.
set -uo pipefail
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_SECONDS=${DOCKER_ENGINE_WAIT:-60}

say() { echo "docker-engine: $*" >&2; }

# A client newer than the daemon (the docker 28 client at /usr/local/bin against dockerd 20.10) negotiates the
# API version by itself; DOCKER_API_VERSION is only needed by clients that do not.
daemon_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and not root (or no apt-get): install them, then run this again"
    daemon_up && exit 0 || exit 1
  fi
  say "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    say "apt-get install ${missing[*]} failed"; exit 1; }
fi

if ! daemon_up; then
  if [ "$(id -u)" != "0" ]; then
    say "no Docker daemon answers and we are not root: start dockerd (or join the docker group), then run again"
    exit 1
  fi
  if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but does not answer yet; waiting"
  else
    say "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # setsid: the daemon outlives this shell and the make that called it.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  for ((i = 0; i < WAIT_SECONDS; i++)); do
    daemon_up && break
    sleep 1
  done
  if ! daemon_up; then
    say "dockerd did not answer within ${WAIT_SECONDS}s; the end of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null
    exit 1
  fi
fi
say "client $(docker version --format '{{.Client.Version}}' 2>/dev/null), daemon $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
exit 0
