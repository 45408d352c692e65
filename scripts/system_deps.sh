#!/usr/bin/env bash
# Debian packages some tests use (prometheus, postgresql, chromium, redis-server, alertmanager). Installed when we are root and
# they are missing; otherwise the tests that need them skip with a reason (or fail under CI=true).
set -uo pipefail
PACKAGES=(prometheus prometheus-alertmanager postgresql chromium chromium-driver redis-server curl)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root (or no apt-get); missing ${missing[*]}: the tests needing them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "system-deps: apt-get failed; tests needing ${missing[*]} will skip (or fail under CI=true)" >&2
exit 0
