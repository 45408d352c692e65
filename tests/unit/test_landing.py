"""Landing decided transactions as hourly training files (fraud/landing.py), and the per-event schema checks and
drift window of the stream consumer (fraud/stream_quality.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from fraud import ingest
from fraud.landing import LANDED_COLUMNS, Landing, hour_name, labels_by_transaction, landed_file
from fraud.settings import DEFAULT_SCHEMA_FILE
from fraud.stream_quality import DriftWindow, RecordChecks, read_schema

T0 = 1_772_370_000  # 2026-03-01 13:00 UTC
DAY = F.DAY_S


def _tx(tid: str, t: int, amount: float = 50.0) -> tuple[int, dict]:
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    return t, {F.TRANSACTION_ID: tid, F.TIMESTAMP: stamp, F.AMOUNT: str(amount), F.USER_ID: "card-" + tid[-1],
               F.CITY: "Lima", "unexpected_field": "dropped"}


def test_an_hour_lands_once_its_label_delay_has_passed_with_the_posted_labels(tmp_path):
    landing = Landing(tmp_path, label_delay_days=7)
    landing.append([_tx("a1", T0 + 10), _tx("a2", T0 + 20), _tx("b1", T0 + 3600 + 5)])
    landing.append([_tx("a1", T0 + 10)])  # a re-delivery after a crash: kept once
    assert landing.pending_hours() == [hour_name(T0), hour_name(T0 + 3600)]
    hour_end = T0 // 3600 * 3600 + 3600
    assert landing.ready(hour_end + 7 * DAY - 1) == []
    assert landing.finalize_ready(hour_end + 7 * DAY - 1, {}) == []
    written = landing.finalize_ready(hour_end + 7 * DAY, {"a2": 1, "zz": 1})
    assert written == [landed_file(tmp_path, hour_name(T0))]
    frame = pd.read_csv(written[0], dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == LANDED_COLUMNS
    assert frame[F.TRANSACTION_ID].tolist() == ["a1", "a2"]
    assert frame[F.LABEL].tolist() == ["0", "1"]
    assert landing.pending_hours() == [hour_name(T0 + 3600)]
    # the landed folder is a pipeline data source as it is: the staging folder is never read
    standard = ingest.standardise(ingest.read_csv_dir(tmp_path), require_label=True).frame
    assert standard[F.TRANSACTION_ID].tolist() == ["a1", "a2"]
    assert standard[F.AMOUNT].tolist() == [50.0, 50.0]


def test_a_crash_mid_append_or_after_the_rename_loses_nothing_acknowledged(tmp_path):
    landing = Landing(tmp_path, label_delay_days=0)
    landing.append([_tx("a1", T0 + 10)])
    staged = tmp_path / ".staging" / f"{hour_name(T0)}.jsonl"
    with open(staged, "a") as f:
        f.write('{"transaction_id": "a2", "timest')  # the process died here: a2 was never acknowledged
    again = Landing(tmp_path, label_delay_days=0)  # the restarted consumer
    again.append([_tx("a2", T0 + 20)])  # ...gets a2 again
    (path,) = again.finalize_ready(T0 + 2 * 3600, {})
    assert pd.read_csv(path, dtype=str)[F.TRANSACTION_ID].tolist() == ["a1", "a2"]
    # a crash after the rename, before the staging file was removed: finalising again changes nothing
    again.append([_tx("a3", T0 + 30)])
    assert again.finalize_ready(T0 + 2 * 3600, {}) == [path]
    assert pd.read_csv(path, dtype=str)[F.TRANSACTION_ID].tolist() == ["a1", "a2"]
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tmp"))


def test_labels_are_the_latest_posted_per_transaction():
    assert labels_by_transaction([{"transaction_id": "a", F.LABEL: "1"}, {"transaction_id": "a", F.LABEL: "0"},
                                  {"transaction_id": "b", F.LABEL: 1}, {"bad": 1}]) == {"a": 0, "b": 1}


@pytest.fixture(scope="module")
def schema():
    return read_schema(DEFAULT_SCHEMA_FILE)


def test_record_checks_follow_the_curated_schema(schema):
    checks = RecordChecks.from_schema(schema)
    ok = {F.AMOUNT: 120.0, F.USER_AGE: float("nan"), F.CITY: "Lima", F.CURRENCY: "PEN", F.DEVICE_TYPE: ""}
    assert checks.problems(ok) == ([], [])
    bad, _ = checks.problems({**ok, F.USER_AGE: 5.0, F.AMOUNT: 1e9})
    assert any(b.startswith("user_age=5 is outside") for b in bad) and any(b.startswith("amount=1e+09") for b in bad)
    strict = sorted(checks.strict_domains)
    loose = sorted(checks.loose_domains)
    assert set(strict) | set(loose) >= {F.CITY, F.CURRENCY, F.PAYMENT_METHOD}
    for name in loose:  # outside a tolerant domain: counted, not refused
        assert checks.problems({**ok, name: "somewhere-new"}) == ([], [name])
    for name in strict:
        bad, _ = checks.problems({**ok, name: "somewhere-new"})
        assert bad and bad[0].startswith(f"{name}='somewhere-new' is not in the schema's domain")


def _stats(amounts, cities):
    """Training statistics as TFDV writes them, of the given values."""
    import tensorflow_data_validation as tfdv

    frame = pd.DataFrame({F.AMOUNT: np.asarray(amounts, np.float64), F.CITY: cities})
    return tfdv.generate_statistics_from_dataframe(frame)


def test_the_drift_window_measures_the_last_hour_against_training(schema):
    rng = np.random.default_rng(0)
    amounts = rng.lognormal(4, 1, 5000)
    cities = rng.choice(["Lima", "Cusco", "Arequipa"], 5000, p=[0.6, 0.3, 0.1]).tolist()
    window = DriftWindow(schema, _stats(amounts, cities))
    assert {F.AMOUNT, F.CITY} <= set(window.references)
    for i in range(2000):  # an hour like training
        window.add(T0 + i, {F.AMOUNT: float(amounts[i]), F.CITY: cities[i]})
    like = window.distances()
    assert like[F.AMOUNT][0] < 0.05 and like[F.CITY][0] < 0.05, like
    assert like[F.AMOUNT][1] == 0.3 and like[F.AMOUNT][2] == 2000
    for i in range(3000):  # the next two hours: ten times the amounts, all in Cusco
        window.add(T0 + 2000 + i * 2, {F.AMOUNT: float(amounts[i]) * 10, F.CITY: "Cusco"})
    shifted = window.distances()
    assert shifted[F.AMOUNT][0] > shifted[F.AMOUNT][1], shifted
    assert shifted[F.CITY][0] == pytest.approx(0.7, abs=0.05)  # |1.0 - 0.3| for Cusco
    # only the last hour counts: the faithful first part has left the window
    assert shifted[F.CITY][2] <= 3600 // 2 + 60
