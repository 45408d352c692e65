"""The synthetic data set as normalized tables in any SQLAlchemy database, with a profile history that makes the
point-in-time join matter (`fraudctl generate --sqlite PATH`). The tables and how they are read back are
described in fraud.sql_source, the production reader; this module only writes them.

Profiles are derived from the CSVs (an entity's most frequent non-empty value; NULL if it has none) and
then, deterministically from ``seed``, given a history:
- users sign up 0-365 days before their first transaction; devices are registered at their first use
  (valid_from == the first transaction's time: the ``<=`` boundary is exercised);
- ``MOVE_SHARE`` of the users with two or more distinct transaction times move home city between two of
  their transactions (their later transactions differ from the CSV, which has no history);
- ``UPGRADE_SHARE`` of the upgradable devices get an OS / firmware upgrade between two transactions;
- ``FUTURE_SHARE`` of the other users and devices get a profile row valid only after their last
  transaction: a join that takes the latest profile instead of the one valid at the time would leak it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraud import atomic, ingest
from fraud import features as F
from fraud.errors import DataContractError, DataSourceError
from fraud.sql_source import (DEVICE_KEY, DEVICE_PROFILE, DEVICES, RESTAURANTS, TABLES, TRANSACTION_COLUMNS,
                              TRANSACTIONS, USER_PROFILE, USERS, VALID_FROM, schema, session, sqlite_url)
from fraud.synth import datagen

# ---------------------------------------------------------------------------------------------
# Profile history (deterministic from the seed)
# ---------------------------------------------------------------------------------------------
MOVE_SHARE = 0.05  # users who move home city during their history
UPGRADE_SHARE = 0.30  # upgradable devices that upgrade during their history
FUTURE_SHARE = 0.05  # other users / devices with a profile row valid only after their last transaction
SIGNUP_MAX_DAYS = 365
FUTURE_MAX_DAYS = 30
OS_UPGRADES = {"ios_17": "ios_18", "android_13": "android_14", "pos_fw_4.9": "pos_fw_5.2"}
_LOCAL_CITIES = tuple(datagen.LOCAL_HOME_WEIGHTS)
_FOREIGN_CITIES = tuple(datagen.TOURIST_HOME_WEIGHTS)


@dataclass(frozen=True)
class WriteSummary:
    url: str  # password hidden
    transactions: int
    users: int
    user_profile_rows: int
    devices: int
    device_profile_rows: int
    restaurants: int
    moved_users: int  # home city changed between two of the user's transactions
    upgraded_devices: int  # OS changed between two of the device's transactions
    future_profile_rows: int  # rows valid only after the entity's last transaction
    seconds: float


def _mode(keys: pd.Series, values: pd.Series) -> pd.Series:
    """The most frequent non-empty value per key (ties: the smallest value); keys without one are absent."""
    pairs = pd.DataFrame({"k": keys, "v": values})
    pairs = pairs[(pairs["k"] != "") & (pairs["v"] != "")]
    counts = pairs.groupby(["k", "v"]).size().rename("n").reset_index()
    counts = counts.sort_values(["k", "n", "v"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("k").set_index("k")["v"]


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    if name in raw.columns:
        return raw[name].astype(str).str.strip()
    return pd.Series("", index=raw.index, dtype=object)


def _change_time(rng: np.random.Generator, times: np.ndarray) -> int | None:
    """A second T with some transaction before T and some at or after T (None if all times are equal)."""
    distinct = np.unique(times)
    if len(distinct) < 2:
        return None
    k = int(rng.integers(1, len(distinct)))
    before, after = int(distinct[k - 1]), int(distinct[k])
    return before + 1 + int(rng.integers(0, after - before))  # in (before, after]: T == after happens


def _other(rng: np.random.Generator, value: str, choices: tuple[str, ...]) -> str:
    pool = [c for c in choices if c != value]
    return pool[int(rng.integers(0, len(pool)))]


def build_tables(raw: pd.DataFrame, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The normalized tables (with profile history) of a raw transactions frame (CSV contract, strings).

    Missing values are None. Deterministic for a given (raw, seed).
    """
    missing = [c for c in F.REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataContractError(f"required column(s) missing: {', '.join(missing)}")
    raw = raw.reset_index(drop=True)
    ids = _column(raw, F.TRANSACTION_ID)
    dup = ids.duplicated()
    if dup.any() or (ids == "").any():
        raise DataContractError(
            f"column {F.TRANSACTION_ID!r} must be a unique, non-empty key: {int(dup.sum())} duplicate(s), "
            f"{int((ids == '').sum())} empty, e.g. {ids[dup].head(3).tolist()}")
    event = ingest.parse_timestamps(_column(raw, F.TIMESTAMP))
    user = _column(raw, F.USER_ID)
    device_key = ingest.normalise_device_id(_column(raw, F.DEVICE_ID))
    rng = np.random.default_rng(seed)

    # transactions
    tx = pd.DataFrame({c: _column(raw, c) for c in TRANSACTION_COLUMNS})
    amount = tx[F.AMOUNT]
    numbers = pd.to_numeric(amount.where(amount != "", None), errors="coerce")
    bad = numbers.isna() & (amount != "")
    if bad.any():
        raise DataContractError(f"column {F.AMOUNT!r} must be numeric, e.g. {amount[bad].head(3).tolist()}")
    tx[F.AMOUNT] = [None if math.isnan(v) else round(float(v), 2) for v in numbers.tolist()]
    label = tx[F.LABEL]
    if (~label.isin(["", "0", "1"])).any():
        raise DataContractError(f"label column {F.LABEL!r} must be 0 or 1 (or empty)")
    tx[F.LABEL] = [None if v == "" else int(v) for v in label.tolist()]
    tx[F.EVENT_TIME] = event.astype(np.int64).tolist()
    tx[DEVICE_KEY] = device_key
    tx = tx.astype(object).where(tx.astype(object) != "", None)

    # users: a sign-up row, then maybe a move (inside the history) or a future row (after it)
    span = pd.DataFrame({"k": user, "t": event}).query("k != ''").groupby("k")["t"]
    first, last = span.min(), span.max()
    times = pd.DataFrame({"k": user, "t": event}).groupby("k")["t"].apply(np.asarray)
    profile = {c: _mode(user, _column(raw, c)) for c in USER_PROFILE}
    user_rows, moved, future = [], 0, 0
    for uid in sorted(first.index):
        home = profile[F.HOME_CITY].get(uid)
        age = profile[F.USER_AGE].get(uid)
        if age is not None:
            number = pd.to_numeric(pd.Series([age]), errors="coerce")[0]
            if math.isnan(number):
                raise DataContractError(f"column {F.USER_AGE!r} must be numeric, got {age!r} for {uid}")
            age = int(round(number))
        row = {F.USER_ID: uid, VALID_FROM: int(first[uid]) - int(rng.integers(0, SIGNUP_MAX_DAYS * F.DAY_S)),
               F.HOME_CITY: home, F.USER_AGE: age, F.USER_GENDER: profile[F.USER_GENDER].get(uid)}
        user_rows.append(row)
        cities = _LOCAL_CITIES if home in _LOCAL_CITIES else _FOREIGN_CITIES if home in _FOREIGN_CITIES else ()
        if not cities:
            continue
        draw = rng.random()
        if draw < MOVE_SHARE:
            t = _change_time(rng, times[uid])
            if t is not None:
                user_rows.append({**row, VALID_FROM: t, F.HOME_CITY: _other(rng, home, cities)})
                moved += 1
        elif draw < MOVE_SHARE + FUTURE_SHARE:
            t = int(last[uid]) + 1 + int(rng.integers(0, FUTURE_MAX_DAYS * F.DAY_S))
            user_rows.append({**row, VALID_FROM: t, F.HOME_CITY: _other(rng, home, cities)})
            future += 1

    # devices: registered at first use, then maybe an upgrade (inside the history) or a future upgrade
    dspan = pd.DataFrame({"k": device_key, "t": event}).query("k != ''").groupby("k")["t"]
    dfirst, dlast = dspan.min(), dspan.max()
    dtimes = pd.DataFrame({"k": device_key, "t": event}).groupby("k")["t"].apply(np.asarray)
    dprofile = {c: _mode(device_key, _column(raw, c)) for c in DEVICE_PROFILE}
    device_rows, upgraded = [], 0
    for key in sorted(dfirst.index):
        os_version = dprofile[F.OS_VERSION].get(key)
        row = {F.DEVICE_ID: key, VALID_FROM: int(dfirst[key]), F.DEVICE_TYPE: dprofile[F.DEVICE_TYPE].get(key),
               F.OS_VERSION: os_version}
        device_rows.append(row)
        if os_version not in OS_UPGRADES:
            continue
        draw = rng.random()
        if draw < UPGRADE_SHARE:
            t = _change_time(rng, dtimes[key])
            if t is not None:
                device_rows.append({**row, VALID_FROM: t, F.OS_VERSION: OS_UPGRADES[os_version]})
                upgraded += 1
        elif draw < UPGRADE_SHARE + FUTURE_SHARE:
            t = int(dlast[key]) + 1 + int(rng.integers(0, FUTURE_MAX_DAYS * F.DAY_S))
            device_rows.append({**row, VALID_FROM: t, F.OS_VERSION: OS_UPGRADES[os_version]})
            future += 1

    rid = _column(raw, F.RESTAURANT_ID)
    city = _mode(rid, _column(raw, F.CITY))
    restaurants = pd.DataFrame({F.RESTAURANT_ID: sorted(set(rid) - {""})})
    restaurants[F.CITY] = [city.get(r) for r in restaurants[F.RESTAURANT_ID]]

    tables = {
        TRANSACTIONS: tx,
        USERS: pd.DataFrame(user_rows, columns=[F.USER_ID, VALID_FROM, *USER_PROFILE]),
        DEVICES: pd.DataFrame(device_rows, columns=[F.DEVICE_ID, VALID_FROM, *DEVICE_PROFILE]),
        RESTAURANTS: restaurants,
    }
    tables[USERS].attrs.update(moved=moved, future=future)
    tables[DEVICES].attrs.update(upgraded=upgraded)
    return tables


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
_CHUNK = 20_000


def _records(frame: pd.DataFrame) -> list[dict]:
    """Plain Python values (no numpy scalars, None for missing) that every DB-API driver accepts."""
    columns = {}
    for c in frame.columns:
        values = frame[c].astype(object).tolist()
        columns[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else
                      int(v) if isinstance(v, (np.integer,)) else v for v in values]
    return [dict(zip(columns, row)) for row in zip(*columns.values())]


def _load(source: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    return ingest.read_csv_dir(source)


def write_database(url: str, source: pd.DataFrame | str | Path, *, seed: int = 0, replace: bool = False,
                   echo: Callable[[str], None] | None = None) -> WriteSummary:
    """Write the normalized tables of `source` (a raw frame or a CSV directory) into the database at `url`.

    Refuses a database that already has any of the four tables unless `replace` (which drops them first).
    One transaction: on PostgreSQL a failure leaves nothing half-written (SQLite's driver commits DDL at once,
    which is why `write_sqlite()` writes a temporary file and renames it at the end).
    """
    started = time.time()
    say = echo or (lambda _msg: None)
    tables = build_tables(_load(source), seed=seed)
    md = schema()
    with session(url, must_exist=False, doing="writing the tables into") as (_, conn, safe), conn.begin():
        existing = [t for t in TABLES if sa.inspect(conn).has_table(t)]
        if existing and not replace:
            raise DataSourceError(f"the database {safe} already has table(s) {', '.join(existing)}; "
                                  "use an empty database (or replace=True to drop them)")
        if existing:
            md.drop_all(conn)
        md.create_all(conn)
        for name in TABLES:
            records = _records(tables[name])
            for i in range(0, len(records), _CHUNK):
                conn.execute(md.tables[name].insert(), records[i:i + _CHUNK])
            say(f"wrote table {name} ({len(records)} rows)")
    users, devices = tables[USERS], tables[DEVICES]
    return WriteSummary(
        url=safe, transactions=len(tables[TRANSACTIONS]), users=users[F.USER_ID].nunique(),
        user_profile_rows=len(users), devices=devices[F.DEVICE_ID].nunique(), device_profile_rows=len(devices),
        restaurants=len(tables[RESTAURANTS]), moved_users=users.attrs["moved"],
        upgraded_devices=devices.attrs["upgraded"], future_profile_rows=users.attrs["future"],
        seconds=time.time() - started)


def write_sqlite(source: pd.DataFrame | str | Path, path: str | Path, *, seed: int = 0,
                 echo: Callable[[str], None] | None = None) -> WriteSummary:
    """`write_database()` into a new SQLite file. Refuses an existing file; a failure leaves no file behind."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    if path.exists():
        raise DataSourceError(f"{path} already exists; refusing to overwrite it (choose a new path)")
    with atomic.atomic_path(path) as tmp:  # SQLite writes into the empty temporary file
        summary = write_database(sqlite_url(tmp), source, seed=seed, echo=echo)
    return WriteSummary(**{**asdict(summary), "url": sqlite_url(path)})
