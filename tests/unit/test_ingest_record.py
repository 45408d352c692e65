"""One record at a time (fraud.ingest.standardise_record, the decision service's path) gives exactly its row of
the frame path (fraud.ingest.standardise, training and scoring), and refuses what the frame path refuses."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from fraud import behaviour as B
from fraud import features as F
from fraud import ingest
from tests.helpers import generate

TRICKY = {
    F.TIMESTAMP: ["2026-06-01T23:15:07Z", "2026-06-01T18:15:07-05:00", "2026-06-01T18:15:07+0000",
                  "01/06/2026 18:15:07", "1/6/2026 8:05:07", "01/06/2026 18:15", "01/06/2026T18:15:07",
                  "1780355707", "1780355707.9", " 2026-06-01 18:15:07 ", "2026-06-01T18:15:07.250Z",
                  "2026-06-01"],
    F.AMOUNT: ["120.5", "", "1e3", " 12 ", "0", "+5", "nan", "99.999", "15000", "3", "4.", "7"],
    F.USER_AGE: ["34", "", "nan", " 61 ", "0", "16", "90", "", "45.5", "22", "", "30"],
    F.DEVICE_ID: ["DEV-3F9A21C0", "dev_3f9a21c0", "dev3f9a21c0", "", " Dev 00:01 ", "DEV-00000001", "x",
                  "", "ÄBC-1", "d", "D-D", "dd"],
    F.CITY: ["Lima", " Cusco ", "", "Arequipa", "lima", "Lima", "", "Piura", "Lima", "Lima", "Trujillo", "Ica"],
    F.CURRENCY: ["PEN", "USD", "", "pen", "PEN", "USD", "PEN", "EUR", "PEN", "PEN", "", "PEN"],
    F.LABEL: ["0", "1", "", "0", "", "1", "0", "0", "", "1", "0", "0"],
}


def _tricky_frame(drop=()) -> pd.DataFrame:
    n = len(TRICKY[F.TIMESTAMP])
    columns = {F.TRANSACTION_ID: [f" t{i} " for i in range(n)], F.USER_ID: [f"U{i % 3}" for i in range(n)],
               F.RESTAURANT_ID: [f"R{i % 2}" if i % 5 else "" for i in range(n)], **TRICKY}
    return pd.DataFrame({k: v for k, v in columns.items() if k not in drop}, dtype=str)


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


def _assert_records_match_frame(raw: pd.DataFrame, *, require_label: bool) -> int:
    frame = ingest.standardise(raw, require_label=require_label).frame
    by_id = {row[F.TRANSACTION_ID]: row for row in frame.to_dict("records")}
    events = {e.transaction_id: e for e in B.events_from_frame(frame)}
    for record in raw.to_dict("records"):
        row = ingest.standardise_record(record, require_label=require_label)
        expected = by_id[row[F.TRANSACTION_ID]]
        assert list(row) == list(expected), "the same columns in the same order"
        different = {k: (row[k], expected[k]) for k in expected if not _same(row[k], expected[k])}
        assert not different, f"{record}: {different}"
        event, offline = B.event_of(row), events[row[F.TRANSACTION_ID]]
        assert all(_same(getattr(event, k), getattr(offline, k)) for k in event.__dataclass_fields__), event
    return len(by_id)


@pytest.mark.parametrize("require_label", [False, True])
def test_generated_records_standardise_to_their_frame_rows(tmp_path, require_label):
    raw = ingest.read_csv_dir(generate(tmp_path / "tx", days=14, users=60, seed=5))
    assert _assert_records_match_frame(raw, require_label=require_label) == len(raw) > 200


@pytest.mark.parametrize("drop", [(), (F.USER_AGE, F.DEVICE_ID, F.CITY), (F.LABEL,),
                                  (F.RESTAURANT_ID, F.CURRENCY, F.LABEL)])
def test_tricky_records_standardise_to_their_frame_rows(drop):
    assert _assert_records_match_frame(_tricky_frame(drop), require_label=False) == len(TRICKY[F.TIMESTAMP])


@pytest.mark.parametrize("column,value,named", [
    (F.AMOUNT, "abc", F.AMOUNT), (F.AMOUNT, "1_000", F.AMOUNT), (F.AMOUNT, "-3", F.AMOUNT),
    (F.USER_AGE, "old", F.USER_AGE), (F.TIMESTAMP, "yesterday", F.TIMESTAMP), (F.TIMESTAMP, "", F.TIMESTAMP),
    (F.TRANSACTION_ID, "  ", F.TRANSACTION_ID), (F.USER_ID, "", F.USER_ID), (F.LABEL, "2", F.LABEL)])
def test_a_bad_field_is_refused_by_both_paths_and_named(column, value, named):
    raw = _tricky_frame().head(1).copy()
    raw[column] = value
    with pytest.raises(ingest.DataContractError, match=named):
        ingest.standardise(raw, require_label=False)
    with pytest.raises(ingest.DataContractError, match=named):
        ingest.standardise_record(raw.to_dict("records")[0], require_label=False)


def test_a_missing_required_field_is_named():
    record = _tricky_frame().drop(columns=[F.AMOUNT]).to_dict("records")[0]
    with pytest.raises(ingest.DataContractError, match=F.AMOUNT):
        ingest.standardise_record(record)
    with pytest.raises(ingest.DataContractError, match=F.LABEL):
        ingest.standardise_record({k: v for k, v in record.items() if k != F.LABEL} | {F.AMOUNT: "1"},
                                  require_label=True)


@pytest.mark.parametrize("value", [
    "2026-06-01T23:15:07Z", "2026-06-01T23:15:07+00:00", "2026-06-01T18:15:07-05:00", "2026-06-01T18:15:07-0500",
    "2026-06-01T23:15:07.999Z", "2026-06-01 18:15:07", "2026-06-01T18:15", "2026-06-01", "2026-12-31T23:59:59+14:00",
    "2026-06-01T18:15:07.123456-05:00", "20260601T181507", "2026-06-01T18:15:07 -05:00", "1780355707",
    "01/06/2026 18:15:07", "31/12/2026 23:59:59"])
def test_one_timestamp_parses_as_the_frame_path_parses_it(value):
    assert ingest.parse_timestamp(value) == int(ingest.parse_timestamps(pd.Series([value]))[0]), value
