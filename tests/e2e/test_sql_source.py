"""The database source: normalized tables, the point-in-time join, SQLite and a real PostgreSQL server."""
from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fraud import features as F
from fraud import ingest
from fraud import sources
from fraud import sql_source as S
from fraud.synth import database as D
from tests.helpers import generate, run_pipeline
from tests.servers import postgres_server

DATA = dict(days=30, users=1000, seed=11)  # ~6k rows: seconds to write and read
PIPELINE_DATA = dict(days=45, users=1000, seed=7)  # enough fraud in every split for a blessed model
T0 = 1_780_000_000  # a UTC second in June 2026


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("sql_source") / "csv", **DATA)


@pytest.fixture(scope="module")
def sqlite_db(csv_dir) -> tuple[str, D.WriteSummary]:
    path = csv_dir.parent / "transactions.db"
    return S.sqlite_url(path), D.write_sqlite(csv_dir, path)


@pytest.fixture(scope="module")
def csv_frame(csv_dir) -> pd.DataFrame:
    # The CSV reader's text is Arrow-backed, the database's plain str: compared as values, the same dtype.
    return ingest.read_csv_dir(csv_dir).astype(object).pipe(_by_id)


@pytest.fixture(scope="module")
def sqlite_read(sqlite_db) -> tuple[pd.DataFrame, S.ReadReport]:
    frame, report = S.read_with_report(sqlite_db[0])
    return frame.pipe(_by_id), report


@pytest.fixture(scope="module")
def tables(sqlite_db) -> dict[str, pd.DataFrame]:
    engine = sa.create_engine(sqlite_db[0])
    with engine.connect() as conn:
        out = {t: pd.read_sql_table(t, conn) for t in S.TABLES}
    engine.dispose()
    return out


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    """Indexed (unnamed index) and sorted by transaction id, so frames of both sources align."""
    return frame.set_index(frame[F.TRANSACTION_ID].to_numpy()).sort_index()


def _event_times(frame: pd.DataFrame) -> pd.Series:
    return ingest.parse_timestamps(frame[F.TIMESTAMP])


def _history(profiles: pd.DataFrame, key: str, tx_key: pd.Series, event: pd.Series):
    """Per entity: its profile rows, and (rows valid from inside its transaction history, rows after it)."""
    last = event.groupby(tx_key).max()
    first_rows = profiles.sort_values(S.VALID_FROM).drop_duplicates(key)
    later = profiles.drop(first_rows.index)
    later = later[later[key].isin(last.index)]
    inside = later[later[S.VALID_FROM].to_numpy() <= last.reindex(later[key]).to_numpy()]
    after = later[later[S.VALID_FROM].to_numpy() > last.reindex(later[key]).to_numpy()]
    return first_rows.set_index(key), inside, after


# ---------------------------------------------------------------------------------------------
# SQLite: the generated data set
# ---------------------------------------------------------------------------------------------
def test_round_trip_keeps_every_transaction_label_and_raw_value(csv_frame, sqlite_read):
    frame, report = sqlite_read
    assert list(frame.columns) == [c for c in S.OUTPUT_COLUMNS]  # the CSV header, in order
    assert all(frame[c].map(type).eq(str).all() for c in frame.columns)  # strings, like read_csv_dir
    assert frame.index.equals(csv_frame.index)
    assert (report.rows_in, report.rows_out) == (len(csv_frame), len(csv_frame))
    for c in (F.LABEL, F.FRAUD_SCENARIO, F.TIMESTAMP, F.DEVICE_ID, F.USER_ID, F.IP_ADDRESS, F.CURRENCY,
              F.PAYMENT_METHOD, F.TRANSACTION_TYPE, F.RESTAURANT_ID):
        assert frame[c].equals(csv_frame[c]), c  # raw messiness kept: mixed timestamps, device id spellings
    amounts = [pd.to_numeric(f[F.AMOUNT].replace("", np.nan)) for f in (frame, csv_frame)]
    pd.testing.assert_series_equal(*amounts)  # empty amounts stay empty
    assert (frame[F.AMOUNT] == "").sum() > 0
    assert frame[F.TIMESTAMP].str.contains("/").any() and frame[F.TIMESTAMP].str.fullmatch(r"\d+").any()


def test_both_sources_standardise_to_the_same_events(csv_frame, sqlite_read):
    a = ingest.standardise(sqlite_read[0], require_label=True).frame
    b = ingest.standardise(csv_frame, require_label=True).frame
    for c in (F.TRANSACTION_ID, F.EVENT_TIME, F.LABEL, F.DEVICE_ID, F.TIME_OF_DAY):
        assert a[c].equals(b[c]), c


def test_unchanged_profiles_equal_the_csv(csv_frame, sqlite_read, tables):
    frame = sqlite_read[0]
    event = _event_times(csv_frame)
    device_key = ingest.normalise_device_id(csv_frame[F.DEVICE_ID])
    for table, key, tx_key, columns in ((S.USERS, F.USER_ID, csv_frame[F.USER_ID], S.USER_PROFILE),
                                        (S.DEVICES, F.DEVICE_ID, device_key, S.DEVICE_PROFILE)):
        _, inside, _ = _history(tables[table], key, tx_key, event)
        unchanged = ~tx_key.isin(inside[key])
        assert unchanged.mean() > 0.5
        for c in columns:
            csv_value, db_value = csv_frame[c][unchanged], frame[c][unchanged]
            known = csv_value != ""  # the CSV blanks some cells at random; the profile has the value
            assert known.sum() > 0.9 * len(known)
            assert db_value[known].equals(csv_value[known]), c
            if (~known).any():
                assert (db_value[~known] != "").mean() > 0.9, c
    known = csv_frame[F.CITY] != ""
    assert frame[F.CITY][known].equals(csv_frame[F.CITY][known])
    assert (frame[F.CITY] != "").all()


def test_a_profile_change_splits_the_history_at_its_valid_from(csv_frame, sqlite_read, tables, sqlite_db):
    frame = sqlite_read[0]
    event = _event_times(csv_frame)
    device_key = ingest.normalise_device_id(csv_frame[F.DEVICE_ID])
    summary = sqlite_db[1]
    for table, key, tx_key, column, expected in (
            (S.USERS, F.USER_ID, csv_frame[F.USER_ID], F.HOME_CITY, summary.moved_users),
            (S.DEVICES, F.DEVICE_ID, device_key, F.OS_VERSION, summary.upgraded_devices)):
        first, inside, _ = _history(tables[table], key, tx_key, event)
        assert len(inside) == expected > 5, table
        checked_before = checked_after = 0
        for _, change in inside.iterrows():
            mine = (tx_key == change[key]).to_numpy()
            before = mine & (event < change[S.VALID_FROM]).to_numpy()
            after = mine & (event >= change[S.VALID_FROM]).to_numpy()
            assert before.any() and after.any()
            old, new = first.loc[change[key], column], change[column]
            assert old != new
            assert (frame[column][before] == old).all()
            assert (frame[column][after] == new).all()
            checked_before, checked_after = checked_before + before.sum(), checked_after + after.sum()
        assert checked_before > 0 and checked_after > 0


def test_a_profile_valid_only_in_the_future_is_never_used(csv_frame, sqlite_read, tables):
    frame = sqlite_read[0]
    event = _event_times(csv_frame)
    _, _, after = _history(tables[S.USERS], F.USER_ID, csv_frame[F.USER_ID], event)
    assert len(after) > 5
    mine = csv_frame[F.USER_ID].isin(after[F.USER_ID])
    future_city = csv_frame[F.USER_ID][mine].map(after.set_index(F.USER_ID)[F.HOME_CITY])
    assert (frame[F.HOME_CITY][mine] != future_city).all()
    known = mine & (csv_frame[F.HOME_CITY] != "")
    assert frame[F.HOME_CITY][known].equals(csv_frame[F.HOME_CITY][known])


def test_ingestion_reads_a_url_through_the_database_source(sqlite_db, sqlite_read, capsys):
    raw = sources.read_source(sqlite_db[0])
    assert "(point-in-time join)" in capsys.readouterr().out  # the counts are printed (component log)
    assert raw.pipe(_by_id).equals(sqlite_read[0])


def test_writer_is_deterministic_and_refuses_to_overwrite(csv_dir, sqlite_db, tmp_path):
    again = D.write_sqlite(csv_dir, tmp_path / "again.db")
    assert (again.user_profile_rows, again.device_profile_rows, again.moved_users) == (
        sqlite_db[1].user_profile_rows, sqlite_db[1].device_profile_rows, sqlite_db[1].moved_users)
    with pytest.raises(S.DataSourceError, match="already exists"):
        D.write_sqlite(csv_dir, tmp_path / "again.db")
    with pytest.raises(S.DataSourceError, match="already has table"):
        D.write_database(S.sqlite_url(tmp_path / "again.db"), csv_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["again.db"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------
# The join by hand: boundaries, missing profiles, bad databases
# ---------------------------------------------------------------------------------------------
def _hand_db(path: Path, *, transactions=None, users=None, devices=None, restaurants=None) -> str:
    url = S.sqlite_url(path)
    engine = sa.create_engine(url)
    md = S.schema()
    rows = {
        S.TRANSACTIONS: transactions or [],
        S.USERS: users or [],
        S.DEVICES: devices or [],
        S.RESTAURANTS: restaurants or [],
    }
    with engine.begin() as conn:
        md.create_all(conn)
        for table, values in rows.items():
            if values:
                conn.execute(md.tables[table].insert(), values)
    engine.dispose()
    return url


def _tx(tid, offset, user="U1", device="DEV-0000000A", restaurant="R001"):
    return {F.TRANSACTION_ID: tid, F.TIMESTAMP: str(T0 + offset), F.AMOUNT: 100.0, F.USER_ID: user,
            F.DEVICE_ID: device, F.RESTAURANT_ID: restaurant, F.LABEL: 0, F.EVENT_TIME: T0 + offset,
            S.DEVICE_KEY: None if device is None else ingest.normalise_device_id(pd.Series([device]))[0]}


def _user(uid, valid_from, city):
    return {F.USER_ID: uid, S.VALID_FROM: T0 + valid_from, F.HOME_CITY: city, F.USER_AGE: 40, F.USER_GENDER: "F"}


HAND = dict(
    transactions=[
        _tx("a", 100), _tx("b", 200), _tx("c", 300),  # U1: before, exactly at, after the move at +200
        _tx("d", 150, user="U2"), _tx("e", 600, user="U2"),  # U2's profile starts at +500
        _tx("f", 300, user="U9", device="dev_0000000b", restaurant="R999"),  # nothing known
        _tx("g", 300, device=None),
    ],
    users=[_user("U1", 0, "Lima"), _user("U1", 200, "Cusco"), _user("U1", 10_000, "Puno"),
           _user("U2", 500, "Arequipa")],
    devices=[{F.DEVICE_ID: "dev0000000a", S.VALID_FROM: T0 + 100, F.DEVICE_TYPE: "ios", F.OS_VERSION: "ios_17"},
             {F.DEVICE_ID: "dev0000000a", S.VALID_FROM: T0 + 250, F.DEVICE_TYPE: "ios", F.OS_VERSION: "ios_18"}],
    restaurants=[{F.RESTAURANT_ID: "R001", F.CITY: "Lima"}],
)


def test_point_in_time_join_by_hand(tmp_path):
    frame, report = S.read_with_report(_hand_db(tmp_path / "hand.db", **HAND))
    got = frame.set_index(F.TRANSACTION_ID)
    assert list(got.index) == ["a", "d", "b", "c", "f", "g", "e"]  # ordered by event time, nothing dropped
    assert got[F.HOME_CITY].to_dict() == {"a": "Lima", "b": "Cusco", "c": "Cusco", "d": "", "e": "Arequipa",
                                          "f": "", "g": "Cusco"}  # never Puno: valid only in the future
    assert got[F.OS_VERSION].to_dict() == {"a": "ios_17", "b": "ios_17", "c": "ios_18", "d": "ios_17",
                                           "e": "ios_18", "f": "", "g": ""}
    assert got[F.CITY].to_dict() == {**{t: "Lima" for t in "abcdeg"}, "f": ""}
    assert got.loc["a", F.USER_AGE] == "40" and got.loc["a", F.AMOUNT] in ("100", "100.0")
    assert got.loc["f", F.DEVICE_ID] == "dev_0000000b"
    assert (report.rows_in, report.rows_out, report.no_user_profile, report.no_device_profile,
            report.no_device_id, report.unknown_restaurant) == (7, 7, 2, 1, 1, 1)
    assert "7 of 7 transactions" in report.message()
    standard = ingest.standardise(frame, require_label=True)  # empty profiles are ordinary missing values
    assert standard.rows_in == len(standard.frame) == 7


def test_missing_tables_and_columns_are_named(tmp_path):
    url = S.sqlite_url(tmp_path / "partial.db")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        S.schema().tables[S.TRANSACTIONS].create(conn)
    with pytest.raises(ingest.DataContractError, match="lacks table.*users, devices, restaurants"):
        S.read_transactions(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (user_id TEXT, home_city TEXT)"))
        conn.execute(sa.text("CREATE TABLE devices (device_id TEXT, valid_from TEXT)"))
        conn.execute(sa.text("CREATE TABLE restaurants (city TEXT)"))
    engine.dispose()
    with pytest.raises(ingest.DataContractError) as err:
        S.read_transactions(url)
    message = str(err.value)
    assert "table users lacks column(s) valid_from" in message
    assert "devices.valid_from must be an INTEGER" in message
    assert "table restaurants lacks column(s) restaurant_id" in message


def test_absent_contract_columns_are_left_to_ingestion(tmp_path):
    url = _hand_db(tmp_path / "h.db", **HAND)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # SQLite >= 3.35 drops columns
        conn.execute(sa.text(f"ALTER TABLE transactions DROP COLUMN {F.LABEL}"))
        conn.execute(sa.text(f"ALTER TABLE transactions DROP COLUMN {F.CURRENCY}"))
    engine.dispose()
    frame = S.read_transactions(url, echo=None)
    assert F.LABEL not in frame.columns and F.CURRENCY not in frame.columns
    with pytest.raises(ingest.DataContractError, match="required column.*is_fraudulent"):
        ingest.standardise(frame, require_label=True)
    assert F.CURRENCY in ingest.standardise(frame, require_label=False).imputed_columns


def test_ambiguous_profiles_and_wrong_event_times_are_rejected(tmp_path):
    url = _hand_db(tmp_path / "h.db", **HAND)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE transactions SET {F.EVENT_TIME} = {F.EVENT_TIME} + 3600 "
                             f"WHERE {F.TRANSACTION_ID} = 'c'"))
    with pytest.raises(ingest.DataContractError, match=r"event_time_utc disagrees.*\['c'\]"):
        S.read_transactions(url)
    with engine.begin() as conn:  # no primary key: a duplicated profile row becomes possible
        conn.execute(sa.text("DROP TABLE users"))
        conn.execute(sa.text("CREATE TABLE users (user_id TEXT, valid_from INTEGER, home_city TEXT)"))
        conn.execute(sa.text(f"INSERT INTO users VALUES ('U1', {T0}, 'Lima'), ('U1', {T0}, 'Cusco')"))
    engine.dispose()
    with pytest.raises(ingest.DataContractError, match="table users has several rows"):
        S.read_transactions(url)


def test_missing_sqlite_file_and_bad_urls_are_clear(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(S.DataSourceError, match="does not exist.*fraudctl generate"):
        S.read_transactions(S.sqlite_url(missing))
    assert not missing.exists()  # SQLite would have created an empty file
    with pytest.raises(S.DataSourceError, match="not a database URL"):
        S.read_transactions("not a url://x")
    with pytest.raises(S.DataSourceError, match="no SQLAlchemy dialect"):
        S.read_transactions("nosuchdb://u:pw@host/db")
    assert S.redact("postgresql://fraud:s3cret@db:5432/x") == "postgresql://fraud:***@db:5432/x"


def test_unreachable_server_fails_quickly_without_showing_the_password():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.time()
    with pytest.raises(S.DataSourceError) as err:
        S.read_transactions(f"postgresql://fraud:s3cret@127.0.0.1:{port}/fraud")
    assert time.time() - started < S.CONNECT_TIMEOUT_S + 3
    message = str(err.value)
    assert "s3cret" not in message and "***" in message
    assert f"cannot connect to the database postgresql://fraud:***@127.0.0.1:{port}/fraud" in message
    assert f"server is running and accepts connections at 127.0.0.1:{port}" in message
    assert isinstance(err.value, ValueError) and not isinstance(err.value, ingest.DataContractError)
    assert err.value.__context__ is None  # the pipeline runner reports the root of the chain: this message


# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway server started by the test
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def test_postgresql_returns_the_same_rows_as_sqlite(postgres_url, csv_dir, sqlite_db, sqlite_read):
    written = D.write_database(postgres_url, csv_dir)
    assert (written.user_profile_rows, written.device_profile_rows, written.moved_users) == (
        sqlite_db[1].user_profile_rows, sqlite_db[1].device_profile_rows, sqlite_db[1].moved_users)
    frame, report = S.read_with_report(postgres_url)
    frame = frame.pipe(_by_id)
    lite, lite_report = sqlite_read
    assert report.rows_out == report.rows_in == lite_report.rows_out
    assert list(frame.columns) == list(lite.columns)
    for c in frame.columns:
        if c != F.AMOUNT:  # numeric(12,2) prints "150.20" in PostgreSQL, "150.2" in SQLite
            assert frame[c].equals(lite[c]), c
    pd.testing.assert_frame_equal(ingest.standardise(frame, require_label=True).frame,
                                  ingest.standardise(lite, require_label=True).frame)
    with pytest.raises(S.DataSourceError, match="already has table"):
        D.write_database(postgres_url, csv_dir)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_appended_labels_override_the_stored_ones_on_the_next_read(backend, request, csv_dir, sqlite_db, tmp_path):
    """The feedback loop's write side (the decision service's POST /v1/labels): appended labels, the latest per
    transaction, replace transactions.is_fraudulent when the pipeline next reads the source."""
    if backend == "sqlite":
        shutil.copy(sqlite_db[0].removeprefix("sqlite:///"), tmp_path / "tx.db")
        url = S.sqlite_url(tmp_path / "tx.db")
    else:
        url = _new_database(request.getfixturevalue("postgres_url"), "labels")
        D.write_database(url, csv_dir)
    before, report = S.read_with_report(url)
    assert report.relabelled == 0
    before = before.pipe(_by_id)
    good = before.index[before[F.LABEL] == "0"][:3].tolist()
    fraud = before.index[before[F.LABEL] == "1"][0]
    assert S.append_labels(url, [{F.TRANSACTION_ID: good[0], F.LABEL: 1, S.REPORTED_AT: "2026-08-01T10:00:00Z"},
                                 {F.TRANSACTION_ID: good[1], F.LABEL: 1},
                                 {F.TRANSACTION_ID: fraud, F.LABEL: 0},
                                 {F.TRANSACTION_ID: "never-seen", F.LABEL: 1}]) == 4
    assert S.append_labels(url, [{F.TRANSACTION_ID: good[1], F.LABEL: 0}]) == 1  # a later report wins
    with pytest.raises(S.DataContractError, match=F.LABEL):  # all or none: nothing of this batch is written
        S.append_labels(url, [{F.TRANSACTION_ID: good[2], F.LABEL: 1}, {F.TRANSACTION_ID: good[2], F.LABEL: 7}])
    after, report = S.read_with_report(url)
    after = after.pipe(_by_id)
    assert report.relabelled == 3 and report.rows_out == len(before)  # the unknown transaction adds no row
    changed = after.index[after[F.LABEL] != before[F.LABEL]].tolist()
    assert sorted(changed) == sorted([good[0], fraud])
    assert after.loc[good[0], F.LABEL] == "1" and after.loc[fraud, F.LABEL] == "0"
    assert after.drop(columns=[F.LABEL]).equals(before.drop(columns=[F.LABEL]))
    assert ingest.standardise(after, require_label=True).frame[F.LABEL].sum() == before[F.LABEL].astype(int).sum()


def test_labels_to_a_database_that_is_not_there_fail_clearly(tmp_path):
    with pytest.raises(S.DataSourceError, match="does not exist"):
        S.append_labels(S.sqlite_url(tmp_path / "missing.db"), [{F.TRANSACTION_ID: "t", F.LABEL: 1}])
    assert not (tmp_path / "missing.db").exists()


# ---------------------------------------------------------------------------------------------
# The real pipeline on a database
# ---------------------------------------------------------------------------------------------
def _new_database(server_url: str, name: str) -> str:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.mark.slow
# PostgreSQL only: the fast tests prove SQLite and PostgreSQL give identical standardised rows, and one
# pipeline run less keeps CI inside its budget.
@pytest.mark.parametrize("backend", ["postgresql"])
def test_pipeline_runs_on_a_database_and_pushes_a_model(backend, request, tmp_path):
    data = generate(tmp_path / "csv", **PIPELINE_DATA)
    if backend == "sqlite":
        url = D.write_sqlite(data, tmp_path / "transactions.db").url
    else:
        url = _new_database(request.getfixturevalue("postgres_url"), "pipeline")
        D.write_database(url, data)
    # The floor is lowered: this test is about the data source, and ~10 eval frauds make PR-AUC noisy.
    run = run_pipeline(url, tmp_path / "root", tmp_path / "serving", "--pr-auc-floor", "0.05")
    assert run.exit_code == 0, f"pipeline failed (exit {run.exit_code}):\n{run.output[-4000:]}"
    assert "(point-in-time join)" in run.output  # FraudExampleGen printed the source's counts
    assert len(run.versions()) == 1
