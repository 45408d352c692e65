"""The database source: the transactions table and its profile tables in any SQLAlchemy database, read with a
point-in-time join. (The synthetic data's writer of these tables is fraud.synth.database.)

Tables (fraud.synth.database writes them with a profile history: `fraudctl generate --sqlite PATH`)
-------------------------------------------------------------------------------------------------
``transactions``  transaction_id (key), timestamp, amount, currency, payment_method, transaction_type,
                  user_id, device_id, ip_address, restaurant_id, is_fraudulent, fraud_scenario,
                  plus two derived columns the join needs:
                  event_time_utc  INTEGER, UTC epoch seconds of ``timestamp`` (fraud.ingest.parse_timestamps)
                  device_key      the device id normalised like ingestion does (fraud.ingest.normalise_device_id)
``users``         user_id, valid_from, home_city, user_age, user_gender      key (user_id, valid_from)
``devices``       device_id (normalised), valid_from, device_type, os_version key (device_id, valid_from)
``restaurants``   restaurant_id (key), city
``labels``        optional, append-only: label_id (key), transaction_id, is_fraudulent, reported_at, recorded_at
                  (UTC epoch seconds). Chargebacks and confirmations reported after the transaction was written
                  (the decision service's POST /v1/labels, `append_labels`); the latest row of a transaction
                  overrides its ``transactions.is_fraudulent`` when read.

``valid_from`` is INTEGER UTC epoch seconds: a profile row holds from that second until the next row of the
same entity. The raw messiness of the CSVs is kept where it lives in the transactions: ``timestamp`` is the
raw text in its four formats, ``device_id`` keeps its spelling variants, ``amount`` may be NULL.
Empty CSV cells are NULL.

Reading (`read_transactions(url)`, what ingestion calls for a URL)
------------------------------------------------------------------
ONE query joins every transaction to the user profile and the device profile with the greatest
``valid_from <= event_time_utc`` (a correlated MAX subquery: portable to SQLite and PostgreSQL, served by
the (id, valid_from) primary keys) and to the restaurant's city. LEFT JOINs: a transaction whose user or
device has no profile valid at its time (unknown entity, or a profile that starts later) keeps its row with
empty profile columns; nothing is dropped. The counts (rows in, rows out, rows without a valid profile)
are printed and returned by `read_with_report()`.
The result has exactly the raw CSV columns (strings, NULL -> ""), so `ingest.standardise()` treats both
sources the same. Transaction columns of the contract that the table lacks are left out, so ingestion
rejects (required) or imputes (optional) them exactly as for a CSV; the join columns are required.

Errors
------
- unreachable server, bad URL, missing driver, missing SQLite file: `fraud.errors.DataSourceError` naming
  the URL without its password and what to check; PostgreSQL connects time out after
  ``CONNECT_TIMEOUT_S`` seconds;
- missing tables or columns, non-integer time columns, duplicate profile keys, an ``event_time_utc`` that
  disagrees with ``timestamp``: `fraud.errors.DataContractError` (the pipeline reports "data rejected").
"""
from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from fraud import features as F
from fraud import ingest
from fraud.errors import DataContractError, DataSourceError


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------
TRANSACTIONS, USERS, DEVICES, RESTAURANTS, LABELS = "transactions", "users", "devices", "restaurants", "labels"
TABLES = (TRANSACTIONS, USERS, DEVICES, RESTAURANTS)  # required
LABEL_ID, REPORTED_AT, RECORDED_AT = "label_id", "reported_at", "recorded_at"
LABEL_COLUMNS = (LABEL_ID, F.TRANSACTION_ID, F.LABEL, REPORTED_AT, RECORDED_AT)
VALID_FROM = "valid_from"  # INTEGER UTC epoch seconds
DEVICE_KEY = "device_key"  # transactions: the normalised device id, joined to devices.device_id

# Raw contract columns stored in `transactions`, and the profile columns of each profile table.
TRANSACTION_COLUMNS = (
    F.TRANSACTION_ID, F.TIMESTAMP, F.AMOUNT, F.CURRENCY, F.PAYMENT_METHOD, F.TRANSACTION_TYPE, F.USER_ID,
    F.DEVICE_ID, F.IP_ADDRESS, F.RESTAURANT_ID, F.LABEL, F.FRAUD_SCENARIO,
)
USER_PROFILE = (F.HOME_CITY, F.USER_AGE, F.USER_GENDER)
DEVICE_PROFILE = (F.DEVICE_TYPE, F.OS_VERSION)
RESTAURANT_PROFILE = (F.CITY,)
_covered = set(TRANSACTION_COLUMNS + USER_PROFILE + DEVICE_PROFILE + RESTAURANT_PROFILE)
if _covered != set(F.CONTRACT_COLUMNS):  # a new contract column must get a home in some table
    raise ImportError(f"sql_source tables do not cover the CSV contract: missing "
                      f"{sorted(set(F.CONTRACT_COLUMNS) - _covered)}, "
                      f"extra {sorted(_covered - set(F.CONTRACT_COLUMNS))}")
OUTPUT_COLUMNS = F.CONTRACT_COLUMNS  # the CSV header: order of read_transactions()' columns

# Columns the join needs (the rest of the contract is checked by ingestion, as for CSVs).
JOIN_COLUMNS = {
    TRANSACTIONS: (F.TRANSACTION_ID, F.TIMESTAMP, F.USER_ID, F.DEVICE_ID, F.RESTAURANT_ID, F.EVENT_TIME,
                   DEVICE_KEY),
    USERS: (F.USER_ID, VALID_FROM),
    DEVICES: (F.DEVICE_ID, VALID_FROM),
    RESTAURANTS: (F.RESTAURANT_ID,),
}
INTEGER_COLUMNS = {TRANSACTIONS: (F.EVENT_TIME,), USERS: (VALID_FROM,), DEVICES: (VALID_FROM,)}
PROFILE_COLUMNS = {USERS: USER_PROFILE, DEVICES: DEVICE_PROFILE, RESTAURANTS: RESTAURANT_PROFILE}

_INTEGER_VALUES = (F.USER_AGE, F.LABEL, F.EVENT_TIME, VALID_FROM)


def schema() -> sa.MetaData:
    """The four tables (SQLAlchemy Core), as write_database() creates them."""
    md = sa.MetaData()

    def col(name, **kw):
        if name == F.AMOUNT:
            return sa.Column(name, sa.Numeric(12, 2), **kw)
        if name in _INTEGER_VALUES:
            return sa.Column(name, sa.BigInteger if name in (F.EVENT_TIME, VALID_FROM) else sa.Integer, **kw)
        return sa.Column(name, sa.Text, **kw)

    sa.Table(TRANSACTIONS, md,
             *(col(c, primary_key=True) if c == F.TRANSACTION_ID else col(c) for c in TRANSACTION_COLUMNS),
             col(F.EVENT_TIME, nullable=False), col(DEVICE_KEY),
             sa.Index("ix_transactions_event_time", F.EVENT_TIME))
    sa.Table(USERS, md, col(F.USER_ID, primary_key=True), col(VALID_FROM, primary_key=True),
             *(col(c) for c in USER_PROFILE))
    sa.Table(DEVICES, md, col(F.DEVICE_ID, primary_key=True), col(VALID_FROM, primary_key=True),
             *(col(c) for c in DEVICE_PROFILE))
    sa.Table(RESTAURANTS, md, col(F.RESTAURANT_ID, primary_key=True), *(col(c) for c in RESTAURANT_PROFILE))
    sa.Table(LABELS, md, sa.Column(LABEL_ID, sa.Integer, primary_key=True, autoincrement=True),
             col(F.TRANSACTION_ID, nullable=False), col(F.LABEL, nullable=False), col(REPORTED_AT),
             sa.Column(RECORDED_AT, sa.BigInteger, nullable=False),
             sa.Index("ix_labels_transaction", F.TRANSACTION_ID))
    return md


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{os.path.abspath(os.path.expanduser(str(path)))}"


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------
CONNECT_TIMEOUT_S = 5
_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(url: str) -> str:
    """The URL without its password (also for strings SQLAlchemy cannot parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any parse failure: fall back to a regex
        return _PASSWORD_RE.sub(r"\1***@", url)


def _engine(url: str, *, must_exist: bool) -> tuple[sa.engine.Engine, str]:
    safe = redact(url)
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        parsed = None
    if parsed is None:
        raise DataSourceError(f"{safe!r} is not a database URL; expected e.g. sqlite:////abs/path/transactions.db "
                              "or postgresql://USER@HOST:PORT/DATABASE (the password in PGPASSWORD or ~/.pgpass)")
    backend = parsed.get_backend_name()
    connect_args = {}
    if backend == "sqlite":
        database = parsed.database or ""
        if must_exist and database not in ("", ":memory:") and not database.startswith("file:"):
            if not os.path.isfile(database):
                raise DataSourceError(
                    f"SQLite database file {os.path.abspath(database)} does not exist ({safe}); create it with "
                    "`fraudctl generate --out DIR --sqlite PATH`. Note: sqlite:///relative.db is relative to the "
                    "working directory, sqlite:////abs/path.db (four slashes) is absolute")
    elif backend == "postgresql" and parsed.get_driver_name() == "psycopg2":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        return sa.create_engine(parsed, connect_args=connect_args, poolclass=NullPool, future=True), safe
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        reason = str(exc)
    raise DataSourceError(f"no SQLAlchemy dialect/driver for {safe}: {reason}. Supported here: sqlite:///PATH "
                          "and postgresql://... (psycopg2)")


def _reason(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _connect(engine: sa.engine.Engine, safe: str):
    """engine.connect(), or a DataSourceError saying what to check."""
    try:
        return engine.connect()
    except sa_exc.DBAPIError as exc:
        reason = _reason(exc)
    # Raised outside the except block, so this message (not the driver's) is the root of the error chain
    # that the pipeline runner reports; the driver's first line is part of it.
    url = engine.url
    where = f" at {url.host}:{url.port or 'its default port'}" if url.host else ""
    raise DataSourceError(
        f"cannot connect to the database {safe}: {reason}. Check that the server is running and accepts "
        f"connections{where}, and that the database name, user and password in the URL are right")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadReport:
    url: str  # password hidden
    rows_in: int  # rows of the transactions table
    rows_out: int  # rows returned (always == rows_in: nothing is dropped)
    no_user_profile: int  # rows with a user_id but no user profile valid at their time
    no_device_profile: int  # rows with a device id but no device profile valid at their time
    no_device_id: int  # rows without a device id (no device profile to join)
    unknown_restaurant: int  # rows with a restaurant_id absent from restaurants
    seconds: float
    relabelled: int = 0  # rows whose label comes from the labels table


    def message(self) -> str:
        return (f"read {self.rows_out} of {self.rows_in} transactions from {self.url} (point-in-time join) in "
                f"{self.seconds:.1f} s; without a profile valid at their time: {self.no_user_profile} user, "
                f"{self.no_device_profile} device; {self.no_device_id} without a device id; "
                f"{self.unknown_restaurant} with an unknown restaurant (profile columns left empty, rows kept)"
                + (f"; {self.relabelled} labelled by the labels table" if self.relabelled else ""))


def _check_schema(conn, safe: str) -> dict[str, list[str]]:
    """The columns of each table; raise naming every missing table/column and wrongly typed time column."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    missing_tables = [t for t in TABLES if t not in present]
    if missing_tables:
        raise DataContractError(
            f"the database {safe} lacks table(s) {', '.join(missing_tables)} (expected {', '.join(TABLES)}; "
            "`fraudctl generate --out DIR --sqlite PATH` writes them, README: the database source)")
    columns, problems = {}, []
    for table in TABLES:
        info = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        columns[table] = list(info)
        lacking = [c for c in JOIN_COLUMNS[table] if c not in info]
        if lacking:
            problems.append(f"table {table} lacks column(s) {', '.join(lacking)}")
        for c in INTEGER_COLUMNS.get(table, ()):
            if c in info and not isinstance(info[c], sa.types.Integer):
                problems.append(f"{table}.{c} must be an INTEGER column (UTC epoch seconds), found {info[c]}")
    if LABELS in present:
        columns[LABELS] = [c["name"] for c in inspector.get_columns(LABELS)]
        lacking = [c for c in (LABEL_ID, F.TRANSACTION_ID, F.LABEL) if c not in columns[LABELS]]
        if lacking:
            problems.append(f"table {LABELS} lacks column(s) {', '.join(lacking)}")
    if problems:
        raise DataContractError(f"the database {safe} does not have the expected schema: "
                                       + "; ".join(problems))
    return columns


def _check_keys(conn, q, safe: str) -> None:
    """Profile keys must be unique, or the join would duplicate transactions."""
    for table, keys in ((USERS, (F.USER_ID, VALID_FROM)), (DEVICES, (F.DEVICE_ID, VALID_FROM)),
                        (RESTAURANTS, (F.RESTAURANT_ID,))):
        cols = ", ".join(q(k) for k in keys)
        dups = conn.execute(sa.text(
            f"SELECT {cols} FROM {q(table)} GROUP BY {cols} HAVING COUNT(*) > 1 LIMIT 3")).fetchall()
        if dups:
            raise DataContractError(
                f"table {table} has several rows for the same ({', '.join(keys)}), e.g. {[tuple(d) for d in dups]}: "
                "the profile valid at a given time would be ambiguous")


def point_in_time_query(columns: dict[str, list[str]], quote: Callable[[str], str]) -> str:
    """The one SELECT: transactions LEFT JOIN the profiles valid at their time, and the restaurant."""
    q = quote
    labelled = LABELS in columns
    select = [f"COALESCE(l.{q(c)}, t.{q(c)}) AS {q(c)}" if c == F.LABEL and labelled else f"t.{q(c)} AS {q(c)}"
              for c in TRANSACTION_COLUMNS if c in columns[TRANSACTIONS]]
    for alias, table in (("u", USERS), ("d", DEVICES), ("r", RESTAURANTS)):
        select += [f"{alias}.{q(c)} AS {q(c)}" for c in PROFILE_COLUMNS[table] if c in columns[table]]
    select += [f"t.{q(F.EVENT_TIME)} AS {q('_event_time')}", f"t.{q(DEVICE_KEY)} AS {q('_device_key')}",
               f"u.{q(VALID_FROM)} AS {q('_user_from')}", f"d.{q(VALID_FROM)} AS {q('_device_from')}",
               f"r.{q(F.RESTAURANT_ID)} AS {q('_restaurant')}"]
    if labelled:
        select.append(f"l.{q(LABEL_ID)} AS {q('_label_id')}")

    def pit(alias: str, table: str, key: str, t_key: str) -> str:
        return (f"LEFT JOIN {q(table)} {alias} ON {alias}.{q(key)} = t.{q(t_key)} AND {alias}.{q(VALID_FROM)} = "
                f"(SELECT MAX(p.{q(VALID_FROM)}) FROM {q(table)} p WHERE p.{q(key)} = t.{q(t_key)} "
                f"AND p.{q(VALID_FROM)} <= t.{q(F.EVENT_TIME)})")

    return "\n".join([
        "SELECT " + ",\n       ".join(select),
        f"FROM {q(TRANSACTIONS)} t",
        pit("u", USERS, F.USER_ID, F.USER_ID),
        pit("d", DEVICES, F.DEVICE_ID, DEVICE_KEY),
        f"LEFT JOIN {q(RESTAURANTS)} r ON r.{q(F.RESTAURANT_ID)} = t.{q(F.RESTAURANT_ID)}",
        *([f"LEFT JOIN {q(LABELS)} l ON l.{q(LABEL_ID)} = (SELECT MAX(p.{q(LABEL_ID)}) FROM {q(LABELS)} p "
           f"WHERE p.{q(F.TRANSACTION_ID)} = t.{q(F.TRANSACTION_ID)})"] if labelled else []),
        f"ORDER BY t.{q(F.EVENT_TIME)}, t.{q(F.TRANSACTION_ID)}",
    ])


def _text(value) -> str:
    """A database value as the CSV would spell it: NULL -> ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()  # naive datetimes are Lima local time, as in the CSV contract
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode()
    return str(value)


@contextlib.contextmanager
def session(url: str, *, must_exist: bool, doing: str):
    """(engine, connection, URL without password) of a database; a driver error inside becomes a DataSourceError
    "<doing> <url> failed: <driver's first line>", and the engine is always disposed of."""
    engine, safe = _engine(url, must_exist=must_exist)
    failure = None
    try:
        with _connect(engine, safe) as conn:
            yield engine, conn, safe
    except sa_exc.DBAPIError as exc:
        failure = f"{doing} {safe} failed: {_reason(exc)}"
    finally:
        engine.dispose()
    if failure:  # this message, not the driver's, is the root of the error chain (the driver's first line is in it)
        raise DataSourceError(failure) from None


def read_with_report(url: str) -> tuple[pd.DataFrame, ReadReport]:
    """The transactions with their point-in-time profiles (raw CSV columns, strings) and the counts."""
    started = time.time()
    with session(url, must_exist=True, doing="reading the transactions from") as (engine, conn, safe):
        if engine.dialect.name == "postgresql":  # one snapshot for the checks, the count and the join
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            columns = _check_schema(conn, safe)
            q = engine.dialect.identifier_preparer.quote
            _check_keys(conn, q, safe)
            rows_in = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {q(TRANSACTIONS)}")).scalar_one())
            result = conn.execute(sa.text(point_in_time_query(columns, q)))
            names = list(result.keys())
            rows = result.fetchall()

    values = list(zip(*rows)) if rows else [()] * len(names)
    raw = dict(zip(names, values))
    frame = pd.DataFrame({c: [_text(v) for v in raw[c]] for c in names if not c.startswith("_")},
                         index=pd.RangeIndex(len(rows)))
    frame = frame[[c for c in OUTPUT_COLUMNS if c in frame.columns]]

    # The stored event time must be the timestamp's, or the join used the wrong profiles.
    event = pd.Series([np.nan if v is None else v for v in raw["_event_time"]], dtype="float64")
    if len(frame):
        parsed = ingest.parse_timestamps(frame[F.TIMESTAMP]).astype("float64")
        wrong = parsed.to_numpy() != event.to_numpy()
        if wrong.any():
            raise DataContractError(
                f"transactions.{F.EVENT_TIME} disagrees with {F.TIMESTAMP} (or is NULL) in {int(wrong.sum())} "
                f"row(s), e.g. transaction(s) {frame[F.TRANSACTION_ID][wrong].head(3).tolist()}: the point-in-time "
                f"join would pick profiles at the wrong time; recompute it with fraud.ingest.parse_timestamps")

    def none(column: str) -> np.ndarray:
        return np.array([v is None for v in raw[column]], dtype=bool)

    has_user = frame[F.USER_ID].to_numpy() != "" if F.USER_ID in frame else np.zeros(len(frame), bool)
    has_device = ~none("_device_key")
    has_rest = frame[F.RESTAURANT_ID].to_numpy() != "" if F.RESTAURANT_ID in frame else np.zeros(len(frame), bool)
    report = ReadReport(
        url=safe, rows_in=rows_in, rows_out=len(frame),
        no_user_profile=int((has_user & none("_user_from")).sum()),
        no_device_profile=int((has_device & none("_device_from")).sum()),
        no_device_id=int((~has_device).sum()),
        unknown_restaurant=int((has_rest & none("_restaurant")).sum()),
        seconds=time.time() - started,
        relabelled=int((~none("_label_id")).sum()) if "_label_id" in raw else 0)
    if report.rows_out != report.rows_in:  # impossible with unique profile keys, unless written meanwhile
        raise DataSourceError(f"{report.message()}: the transactions table changed while it was read; retry")
    frame.attrs["source_report"] = asdict(report)
    return frame, report


def append_labels(url: str, labels: list[dict]) -> int:
    """Append labels ({transaction_id, is_fraudulent 0/1, reported_at}) to the labels table, created if absent,
    in one database transaction (all or none): the next pipeline run reads them (the latest label of a
    transaction wins). Returns the rows written."""
    rows = []
    for label in labels:
        value = label[F.LABEL]
        if value not in (0, 1):
            raise DataContractError(f"label {F.LABEL!r} must be 0 or 1, got {value!r}")
        rows.append({F.TRANSACTION_ID: str(label[F.TRANSACTION_ID]), F.LABEL: int(value),
                     REPORTED_AT: str(label.get(REPORTED_AT) or ""), RECORDED_AT: int(time.time())})
    if not rows:
        return 0
    table = schema().tables[LABELS]
    with session(url, must_exist=True, doing="writing labels to") as (engine, conn, _):
        with conn.begin():
            table.create(conn, checkfirst=True)
            conn.execute(table.insert(), rows)
    return len(rows)


def read_transactions(url: str, *, echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """What ingestion calls for an SQLAlchemy URL: the raw transactions frame, counts printed via `echo`."""
    frame, report = read_with_report(url)
    if echo is not None:
        echo(report.message())
    return frame
