#!/bin/sh
# The project image's entrypoint (under tini): runs the command it is given. A first word that is not a program on
# PATH is a fraudctl subcommand, so `docker run IMAGE generate --out /srv/fraud/data` = `fraudctl generate ...`;
# `airflow ...`, `fraudctl ...`, `python ...`, `pytest ...`, `bash` run as they are. No command: fraudctl --help.
set -e
if [ $# -eq 0 ]; then
  set -- fraudctl --help
elif ! command -v "$1" >/dev/null 2>&1; then
  set -- fraudctl "$@"
fi
exec "$@"
