#!/usr/bin/env bash
# Local stand-ins for the public images this project's containers start from, for machines that cannot pull
# from any registry (as here). Each is built only when no image with its tag exists and pulling it fails, so on a
# machine that can pull the official images nothing here is built.
#
#   debian:bookworm-slim          debootstrap --variant=minbase bookworm + docker import
#   python:3.10-slim-bookworm     that + this machine's CPython 3.10 prefix, copied to /usr/local
#   postgres:15-bookworm          Debian's postgresql-15, with an entrypoint honouring the official image's
#                                 POSTGRES_* variables and /docker-entrypoint-initdb.d
#   redis:7.0.15-bookworm         Debian's redis-server 7.0.15
#   prom/prometheus:v2.42.0       Debian's prometheus 2.42.0
#   prom/alertmanager:v0.25.0     Debian's prometheus-alertmanager 0.25.0
#
# The tags are those docker-compose.yml names; the versions are Debian 12's packages, so the stand-ins run the
# same major/minor versions as the official images of those tags. They are NOT the official images: see
# docs/containers.md.
#
#   docker/base/build_base_images.sh [--force] [NAME...]      NAME: debian python postgres redis prometheus alertmanager
# A missing image is first pulled (BASE_NO_PULL=1: never); --force rebuilds the stand-ins even when present.
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), PYTHON_PREFIX (default: pyenv's 3.10 or python3.10's).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
WANTED=("$@")
[ ${#WANTED[@]} -eq 0 ] && WANTED=(debian python postgres redis prometheus alertmanager)

declare -A TAG=(
  [debian]=debian:bookworm-slim
  [python]=python:3.10-slim-bookworm
  [postgres]=postgres:15-bookworm
  [redis]=redis:7.0.15-bookworm
  [prometheus]=prom/prometheus:v2.42.0
  [alertmanager]=prom/alertmanager:v0.25.0
)

TMPLIST=$(mktemp)
cleanup() { local d; while read -r d; do rm -rf "$d"; done <"$TMPLIST"; rm -f "$TMPLIST"; }
trap cleanup EXIT
# A scratch directory, removed on exit (listed in a file: it is created inside a command substitution).
tmpdir() { local d; d=$(mktemp -d "/var/tmp/$1.XXXXXX"); echo "$d" >>"$TMPLIST"; echo "$d"; }
say() { echo "base-images: $*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
# docker build with BuildKit (the daemon's own, through Debian's 20.10 client when the newer client on PATH
# has no buildx plugin). Its output goes to a log; the end of it is printed when the build fails.
dbuild() {
  local client=docker log; log=$(mktemp)
  if [ -x /usr/bin/docker ] && ! docker buildx version >/dev/null 2>&1; then client=/usr/bin/docker; fi
  if ! DOCKER_BUILDKIT=1 "$client" build --progress=plain "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

build_debian() {
  command -v debootstrap >/dev/null || { say "debootstrap missing (scripts/docker_engine.sh installs it)"; return 1; }
  local root; root=$(tmpdir bookworm-rootfs)
  say "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (a few minutes)"
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
  # What the official slim image does on top of minbase: apt sources for updates and security, no docs/man
  # pages/locales in later installs, no recommends cached, apt's caches emptied.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/tmp/*
  say "docker import -> ${TAG[debian]}"
  tar --numeric-owner -C "$root" -c . | docker import --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase bookworm (local stand-in)" - "${TAG[debian]}" >/dev/null
}

python_prefix() {
  if [ -n "${PYTHON_PREFIX:-}" ]; then echo "$PYTHON_PREFIX"; return; fi
  local c
  for c in "$HOME"/.pyenv/versions/3.10*/ /root/.pyenv/versions/3.10*/; do
    [ -x "$c/bin/python3.10" ] && { echo "${c%/}"; return; }
  done
  c=$(command -v python3.10 2>/dev/null) && { dirname "$(dirname "$(readlink -f "$c")")"; return; }
  return 1
}

build_python() {
  local prefix ctx
  prefix=$(python_prefix) || { say "no CPython 3.10 on this machine (PYTHON_PREFIX=...)"; return 1; }
  "$prefix/bin/python3.10" -c 'import sysconfig, sys; assert sysconfig.get_config_var("Py_ENABLE_SHARED")' 2>/dev/null \
    || say "note: $prefix is not built with --enable-shared"
  ctx=$(tmpdir python-ctx)
  say "python: copying $prefix ($(du -sh "$prefix" | cut -f1)) without tests, caches and extra site-packages"
  # As the official image: no test suites, no .pyc (written at install time of what uses them), no static
  # libpython; site-packages keeps pip and setuptools only (this machine's own .pth hooks stay out).
  mkdir -p "$ctx/prefix"
  tar -C "$prefix" -c \
      --exclude='lib/python3.10/test' --exclude='lib/python3.10/*/test' --exclude='lib/python3.10/*/tests' \
      --exclude='lib/python3.10/idlelib/idle_test' --exclude='__pycache__' --exclude='*.pyc' --exclude='*.pyo' \
      --exclude='libpython*.a' --exclude='lib/python3.10/site-packages' . | tar -C "$ctx/prefix" -x
  mkdir -p "$ctx/prefix/lib/python3.10/site-packages"
  local sp="$prefix/lib/python3.10/site-packages" entry
  for entry in "$sp"/pip "$sp"/pip-*.dist-info "$sp"/setuptools "$sp"/setuptools-*.dist-info "$sp"/pkg_resources \
               "$sp"/_distutils_hack "$sp"/distutils-precedence.pth; do
    [ -e "$entry" ] && cp -a "$entry" "$ctx/prefix/lib/python3.10/site-packages/"
  done
  find "$ctx/prefix" -name __pycache__ -prune -exec rm -rf {} +
  cp "$HERE/python/Dockerfile" "$ctx/Dockerfile"
  say "python: docker build -> ${TAG[python]}"
  dbuild --build-arg "BASE_IMAGE=${TAG[debian]}" --build-arg "ORIG_PREFIX=$prefix" -t "${TAG[python]}" "$ctx"
}

build_service() {  # name: a Dockerfile under docker/base/<name>/ FROM the local debian base
  dbuild --build-arg "BASE_IMAGE=${TAG[debian]}" -t "${TAG[$1]}" "$HERE/$1"
}

ensure() {
  local name=$1 t0
  if [ $FORCE -eq 0 ] && have "${TAG[$name]}"; then
    say "${TAG[$name]}: present"
    return 0
  fi
  # Where a registry answers, the official image is used and nothing is built.
  if [ $FORCE -eq 0 ] && [ "${BASE_NO_PULL:-0}" != 1 ] && timeout 600 docker pull -q "${TAG[$name]}" >/dev/null 2>&1; then
    say "${TAG[$name]}: pulled (official image)"
    return 0
  fi
  t0=$(date +%s)
  say "${TAG[$name]}: building"
  case $name in
    debian) build_debian ;;
    python) ensure debian; build_python ;;
    *) ensure debian; build_service "$name" ;;
  esac
  say "${TAG[$name]}: built in $(elapsed "$t0"), $(docker image inspect -f '{{.Size}}' "${TAG[$name]}" | awk '{printf "%.0f MB", $1/1e6}')"
}

T0=$(date +%s)
for name in "${WANTED[@]}"; do
  [ -n "${TAG[$name]:-}" ] || { say "unknown image '$name' (one of: ${!TAG[*]})"; exit 2; }
  ensure "$name"
done
say "done in $(elapsed "$T0")"
