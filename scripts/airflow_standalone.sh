#!/usr/bin/env bash
# `make airflow`: Airflow (webserver + scheduler + triggerer, `airflow standalone`) running this project's DAG.
#
#   AIRFLOW_HOME   <repo>/airflow_home (git-ignored; FRAUD_AIRFLOW_HOME to change). Any AIRFLOW_HOME already
#                  in your shell is ignored on purpose: `make airflow` never touches ~/airflow.
#   DAG folder     $AIRFLOW_HOME/dags, holding only a link to pipeline/airflow_dag.py. (pipeline/ itself or a
#                  copy of the file work as well: the DAG imports only the installed project, and
#                  pipeline/.airflowignore keeps Airflow from parsing the DAG's library modules.)
#   Metadata DB    SQLite in $AIRFLOW_HOME (SequentialExecutor: one task at a time) by default.
#                  PostgreSQL + LocalExecutor for real use:
#                    FRAUD_AIRFLOW_DB=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB make airflow
#   Executor       FRAUD_AIRFLOW_EXECUTOR=sequential | local | celery (default: sequential with SQLite, local with
#                  PostgreSQL). celery needs FRAUD_AIRFLOW_DB and a Redis broker, FRAUD_AIRFLOW_BROKER (default
#                  redis://127.0.0.1:6379/0); this script then also starts FRAUD_AIRFLOW_WORKERS Celery workers
#                  (default 2) on this host. Workers on other hosts: docs/airflow.md.
#   Admin user     `admin`, with a generated password printed once when the user is created and kept in
#                  $AIRFLOW_HOME/admin_password (mode 600, git-ignored): never committed, never a default.
#   Pipeline       FRAUD_SETTINGS_FILE or FRAUD_DATA_DIR / FRAUD_PIPELINE_ROOT / FRAUD_SERVING_DIR (see
#                  pipeline/airflow_settings.py); if none is set, runs/airflow/{data,pipeline,serving_models},
#                  with a generated demo data set when runs/airflow/data is missing.
#   Port           FRAUD_AIRFLOW_PORT (default 8080).
#
# Stop with Ctrl-C (the script stops Airflow's processes). Airflow's own output: $AIRFLOW_HOME/standalone.log
# (with Celery: the scheduler's; webserver.log, triggerer.log and worker<N>.log beside it).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
BIN="$VENV/bin"
export PATH="$BIN:$PATH"  # `airflow standalone` starts its components as `airflow ...` from PATH
if [ ! -x "$BIN/airflow" ]; then
  echo "error: $BIN/airflow not found: run 'make setup' first (Python 3.10 venv with TFX and Airflow)" >&2
  exit 1
fi

export AIRFLOW_HOME="${FRAUD_AIRFLOW_HOME:-$REPO/airflow_home}"
PORT="${FRAUD_AIRFLOW_PORT:-8080}"
DAG_ID="fraud_detection"
URL="http://localhost:$PORT"
mkdir -p "$AIRFLOW_HOME/dags"
ln -sfn "$REPO/pipeline/airflow_dag.py" "$AIRFLOW_HOME/dags/fraud_detection_dag.py"

# --- Airflow configuration (environment variables win over airflow.cfg) -------------------------------------
export AIRFLOW__CORE__DAGS_FOLDER="$AIRFLOW_HOME/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True  # a new deployment does not start training on its own
# The DAG file does not import TFX: it reads the pipeline compiled once (pipeline/airflow_plan.py, done below
# before Airflow starts), so a parse takes 1-1.5 s and Airflow's default timeouts and parse interval apply.
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="${FRAUD_AIRFLOW_DAGBAG_IMPORT_TIMEOUT:-60}"
export AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT=$((AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT + 60))
export AIRFLOW__WEBSERVER__WEB_SERVER_PORT="$PORT"
export AIRFLOW__WEBSERVER__EXPOSE_CONFIG=False
# The REST API accepts the admin's password (curl -u) as well as the browser session.
export AIRFLOW__API__AUTH_BACKENDS="airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"

EXECUTOR="${FRAUD_AIRFLOW_EXECUTOR:-}"
if [ -n "${FRAUD_AIRFLOW_DB:-}" ]; then
  case "$FRAUD_AIRFLOW_DB" in
    postgresql://*|postgresql+psycopg2://*) ;;
    *) echo "error: FRAUD_AIRFLOW_DB must be a PostgreSQL URL (postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB)," \
            "got '${FRAUD_AIRFLOW_DB%%://*}://...'" >&2; exit 2 ;;
  esac
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$FRAUD_AIRFLOW_DB"
  EXECUTOR="${EXECUTOR:-local}"
  DB_DESC="PostgreSQL (${FRAUD_AIRFLOW_DB##*@})"
else
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
  EXECUTOR="${EXECUTOR:-sequential}"
  DB_DESC="SQLite ($AIRFLOW_HOME/airflow.db)"
  if [ "$EXECUTOR" != "sequential" ]; then
    echo "error: FRAUD_AIRFLOW_EXECUTOR=$EXECUTOR needs a PostgreSQL metadata database: set FRAUD_AIRFLOW_DB" \
         "(postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB); SQLite allows one task at a time only" >&2; exit 2
  fi
fi
WORKERS=0
case "$EXECUTOR" in
  sequential) export AIRFLOW__CORE__EXECUTOR=SequentialExecutor ;;
  local) export AIRFLOW__CORE__EXECUTOR=LocalExecutor ;;
  celery)
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
    BROKER="${FRAUD_AIRFLOW_BROKER:-redis://127.0.0.1:6379/0}"
    case "$BROKER" in redis://*|rediss://*) ;; *)
      echo "error: FRAUD_AIRFLOW_BROKER must be a Redis URL (redis://HOST:6379/0), got '${BROKER%%://*}://...'" >&2
      exit 2 ;;
    esac
    export AIRFLOW__CELERY__BROKER_URL="$BROKER"
    # Task states come back through the metadata database (Celery's result backend in the same PostgreSQL).
    export AIRFLOW__CELERY__RESULT_BACKEND="db+${FRAUD_AIRFLOW_DB/+psycopg2/}"
    export AIRFLOW__CELERY__WORKER_CONCURRENCY="${FRAUD_AIRFLOW_WORKER_CONCURRENCY:-1}"  # a TFX task fills a core
    # Each worker imports TFX once at start; the tasks it forks start with it (pipeline/celery_config.py).
    export AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=pipeline.celery_config.CELERY_CONFIG
    # Task instances record the worker that ran them (worker1@HOST, ...), not only the host.
    export AIRFLOW__CORE__HOSTNAME_CALLABLE=pipeline.celery_config.worker_hostname
    export AIRFLOW__WEBSERVER__WORKERS="${AIRFLOW__WEBSERVER__WORKERS:-2}"  # gunicorn's 4 are many for 2 cores
    WORKERS="${FRAUD_AIRFLOW_WORKERS:-2}"
    ;;
  *) echo "error: FRAUD_AIRFLOW_EXECUTOR must be sequential, local or celery, got '$EXECUTOR'" >&2; exit 2 ;;
esac
DB_DESC="$DB_DESC, ${AIRFLOW__CORE__EXECUTOR}$( [ "$WORKERS" -gt 0 ] && echo " with $WORKERS workers" || true)"

# --- Pipeline settings (pipeline/airflow_settings.py) ------------------------------------------------------
if [ -z "${FRAUD_SETTINGS_FILE:-}" ]; then
  export FRAUD_DATA_DIR="${FRAUD_DATA_DIR:-$REPO/runs/airflow/data}"
  export FRAUD_PIPELINE_ROOT="${FRAUD_PIPELINE_ROOT:-$REPO/runs/airflow/pipeline}"
  export FRAUD_SERVING_DIR="${FRAUD_SERVING_DIR:-$REPO/runs/airflow/serving_models}"
  if [ "$FRAUD_DATA_DIR" = "$REPO/runs/airflow/data" ] && [ ! -d "$FRAUD_DATA_DIR" ]; then
    echo "Generating a demo data set in $FRAUD_DATA_DIR (fraudctl generate) ..."
    "$BIN/fraudctl" generate --out "$FRAUD_DATA_DIR" >/dev/null
  fi
fi

# Other shells (airflow dags trigger, airflow tasks ...) need the same environment: `source` this file.
ENV_FILE="$AIRFLOW_HOME/env.sh"
# Private before anything is written to it (it may hold AIRFLOW__DATABASE__SQL_ALCHEMY_CONN's password).
( umask 077; : > "$ENV_FILE" )
chmod 600 "$ENV_FILE"
{
  echo "# Written by scripts/airflow_standalone.sh: source it to use the airflow CLI on this installation."
  echo "export PATH=\"$BIN:\$PATH\""
  env | grep -E '^(AIRFLOW_HOME|AIRFLOW__[A-Z_]+|FRAUD_(SETTINGS_FILE|DATA_DIR|PIPELINE_ROOT|SERVING_DIR|DAG_[A-Z_]+|[A-Z_]+))=' \
    | grep -v '^FRAUD_AIRFLOW_' | sort | sed -E "s/^([^=]+)=(.*)$/export \1='\2'/"
} > "$ENV_FILE"

# --- The pipeline, compiled once for the DAG file (pipeline/airflow_plan.py) ---------------------------------
echo "Compiling the pipeline for the DAG (python -m pipeline.airflow_plan; imports TFX, once per settings) ..."
"$BIN/python" -m pipeline.airflow_plan 2> "$AIRFLOW_HOME/plan_compile.log" || {
  echo "error: could not compile the pipeline; last lines of $AIRFLOW_HOME/plan_compile.log:" >&2
  tail -15 "$AIRFLOW_HOME/plan_compile.log" >&2; exit 1; }

# --- Database and admin user -------------------------------------------------------------------------------
echo "Preparing the Airflow metadata database: $DB_DESC"
"$BIN/airflow" db migrate > "$AIRFLOW_HOME/db_migrate.log" 2>&1 \
  || { echo "error: airflow db migrate failed; see $AIRFLOW_HOME/db_migrate.log" >&2; tail -5 "$AIRFLOW_HOME/db_migrate.log" >&2; exit 1; }

PASSWORD_FILE="$AIRFLOW_HOME/admin_password"
# Creates `admin` with a random password when it does not exist yet, and prints that password (only then).
NEW_PASSWORD="$("$BIN/python" - "$PASSWORD_FILE" <<'PY' 2>>"$AIRFLOW_HOME/db_migrate.log" | sed -n 's/^NEW_PASSWORD=//p'
import os, secrets, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

path = sys.argv[1]
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    if sm.find_user(username="admin") is None:
        password = secrets.token_urlsafe(18)
        if not sm.add_user("admin", "Admin", "User", "admin@localhost", sm.find_role("Admin"), password):
            sys.exit("could not create the admin user")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        print("NEW_PASSWORD=" + password)
PY
)"
if [ -n "$NEW_PASSWORD" ]; then
  echo "Created the Airflow user admin. Password (shown this once; kept in $PASSWORD_FILE, mode 600): $NEW_PASSWORD"
elif [ ! -s "$PASSWORD_FILE" ]; then
  echo "note: user admin exists but $PASSWORD_FILE is missing: set a new password with" \
       "'airflow users reset-password -u admin' (after 'source $AIRFLOW_HOME/env.sh')" >&2
fi

# --- Start --------------------------------------------------------------------------------------------------
LOG="$AIRFLOW_HOME/standalone.log"
set -m  # own process group, and SIGINT not ignored: `airflow standalone` stops its children on SIGINT
WORKER_PIDS=()
if [ "$EXECUTOR" = celery ]; then
  # `airflow standalone` runs its own LocalExecutor whatever the configuration says: with Celery, the
  # scheduler, the webserver and the triggerer are started one by one, and the Celery workers beside them.
  "$BIN/airflow" scheduler >> "$LOG" 2>&1 &
  AIRFLOW_PID=$!
  "$BIN/airflow" webserver >> "$AIRFLOW_HOME/webserver.log" 2>&1 &
  WORKER_PIDS+=($!)
  "$BIN/airflow" triggerer >> "$AIRFLOW_HOME/triggerer.log" 2>&1 &
  WORKER_PIDS+=($!)
  for i in $(seq 1 "$WORKERS"); do
    FRAUD_AIRFLOW_WORKER_NAME="worker$i@$(hostname)" "$BIN/airflow" celery worker --celery-hostname "worker$i@%h" \
      --concurrency "$AIRFLOW__CELERY__WORKER_CONCURRENCY" --skip-serve-logs >> "$AIRFLOW_HOME/worker$i.log" 2>&1 &
    WORKER_PIDS+=($!)
  done
else
  "$BIN/airflow" standalone >> "$LOG" 2>&1 &
  AIRFLOW_PID=$!
fi
set +m
WAITER_PID=
stop() {
  trap - INT TERM EXIT
  [ -n "$WAITER_PID" ] && kill "$WAITER_PID" 2>/dev/null
  if kill -0 "$AIRFLOW_PID" 2>/dev/null; then
    echo; echo "Stopping Airflow (pid $AIRFLOW_PID) ..."
    kill -INT "$AIRFLOW_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$AIRFLOW_PID" 2>/dev/null || break; sleep 0.5; done
    kill -TERM -- "-$AIRFLOW_PID" 2>/dev/null || true  # anything left in its process group
  fi
  for pid in "${WORKER_PIDS[@]}"; do  # webserver, triggerer, Celery workers (warm shutdown: the task finishes)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 60); do  # up to 30 s for a running task, then the rest is stopped
    alive=0; for pid in "${WORKER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.5
  done
  for pid in "${WORKER_PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

echo "Starting Airflow on $URL (its output: $LOG) ..."
# Wait until the webserver and the scheduler are healthy and the scheduler has parsed the DAG (about a second:
# the plan is compiled). Import errors raised since this start are shown as they appear.
"$BIN/python" - "$URL" "$PASSWORD_FILE" "$DAG_ID" "$AIRFLOW_PID" <<'PY' &
import base64, calendar, json, os, sys, time, urllib.error, urllib.request
url, password_file, dag_id, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started, deadline, shown = time.time(), time.time() + 600, set()
auth = None

def get(path):
    req = urllib.request.Request(url + path)
    if auth:
        req.add_header("Authorization", "Basic " + auth)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)

def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

phase = "health"
while time.time() < deadline and alive():
    try:
        if phase == "health":
            health = get("/health")
            if all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler")):
                print("Webserver and scheduler are up; waiting for the scheduler to parse the DAG ...", flush=True)
                phase = "dag"
        else:
            if auth is None and os.path.exists(password_file):
                auth = base64.b64encode(("admin:" + open(password_file).read().strip()).encode()).decode()
            for err in get("/api/v1/importErrors").get("import_errors", []):
                when = calendar.timegm(time.strptime(err["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))  # UTC
                if when >= started - 5 and err["import_error_id"] not in shown:
                    shown.add(err["import_error_id"])
                    print(f"\nIMPORT ERROR in {err['filename']} (airflow dags list-import-errors):\n"
                          f"{err['stack_trace'][-2500:]}", file=sys.stderr, flush=True)
            get(f"/api/v1/dags/{dag_id}")
            print(f"DAG {dag_id} is listed (parsed {time.time() - started:.0f} s after start).", flush=True)
            sys.exit(0)
    except (urllib.error.URLError, OSError, ValueError):
        pass
    time.sleep(2)
sys.exit("Airflow exited" if not alive() else f"not ready after {time.time() - started:.0f} s")
PY
WAITER_PID=$!
wait "$WAITER_PID" || true  # in the background so that Ctrl-C (the trap) is handled at once
WAITER_PID=
if ! kill -0 "$AIRFLOW_PID" 2>/dev/null; then
  echo "error: Airflow exited; last lines of $LOG:" >&2; tail -20 "$LOG" >&2; exit 1
fi

cat <<EOF

================================================================================================
 Airflow is running: $URL      database: $DB_DESC
 Log in as admin; the generated password is in $PASSWORD_FILE (mode 600).

 DAG $DAG_ID: one task per TFX component, daily at 00:00 America/Lima, created paused.
 In another shell:
   source $ENV_FILE
   airflow dags unpause $DAG_ID      # starts the schedule: catchup is off, so one run for the latest day now
   airflow dags trigger $DAG_ID      # a run now (waits while the DAG is paused or another run is active)
   airflow dags trigger $DAG_ID --conf '{"train_steps": 300, "eval_days": 7}'   # per-run parameters:
                                     #   data_dir, eval_days, valid_days, train_steps
   airflow dags list-runs -d $DAG_ID
   airflow tasks states-for-dag-run $DAG_ID <run_id>
 REST API:
   curl -u "admin:\$(cat $PASSWORD_FILE)" -H 'Content-Type: application/json' \\
        -X POST $URL/api/v1/dags/$DAG_ID/dagRuns -d '{"conf": {"train_steps": 300}}'
 Pipeline: data $( [ -n "${FRAUD_SETTINGS_FILE:-}" ] && echo "from $FRAUD_SETTINGS_FILE" || echo "$FRAUD_DATA_DIR -> models in $FRAUD_SERVING_DIR")
$( [ "$WORKERS" -gt 0 ] && echo " Workers: $WORKERS Celery workers on this host (logs: $AIRFLOW_HOME/worker<N>.log); more hosts: docs/airflow.md" || true )
 Stop: Ctrl-C
================================================================================================
EOF
wait "$AIRFLOW_PID"
