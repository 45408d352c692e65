#!/usr/bin/env bash
# PostgreSQL init script (run once, on an empty data directory, by the postgres image's entrypoint from
# /docker-entrypoint-initdb.d): one server, one database and one owner role per user of it.
#   airflow       Airflow's metadata database          (role airflow, AIRFLOW_DB_PASSWORD)
#   mlmd          ML Metadata of the pipeline           (role mlmd,    MLMD_DB_PASSWORD)
#   transactions  the pipeline's source database        (role fraud,   SOURCE_DB_PASSWORD)
# Passwords come from the environment (docker-compose.yml passes them from .env), never from this file.
set -euo pipefail

create() {  # role database password
  local role=$1 db=$2 password=$3
  if [ -z "$password" ]; then echo "init-databases: no password for role $role" >&2; exit 1; fi
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres -q \
       --set=role="$role" --set=db="$db" --set=password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
  echo "init-databases: database $db (owner $role)"
}

create airflow airflow "${AIRFLOW_DB_PASSWORD:-}"
create mlmd mlmd "${MLMD_DB_PASSWORD:-}"
create fraud transactions "${SOURCE_DB_PASSWORD:-}"
