"""The data contract: timestamp formats, device ids, imputation of optional columns, clear errors."""
import pandas as pd
import pytest

from fraud import features as F
from fraud import ingest


def _frame(**overrides):
    base = {
        F.TRANSACTION_ID: ["t1", "t2", "t3", "t4"],
        F.TIMESTAMP: ["2026-06-01T23:15:07Z", "2026-06-01T18:15:07-05:00", "01/06/2026 18:15:07", "1780355707"],
        F.AMOUNT: ["120.5", "", "99", "15000"],
        F.USER_ID: ["U1", "U1", "U2", "U3"],
        F.LABEL: ["0", "0", "1", "0"],
        F.DEVICE_ID: ["DEV-3F9A21C0", "dev_3f9a21c0", "dev3f9a21c0", "DEV-00000001"],
    }
    base.update(overrides)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


def test_all_timestamp_formats_mean_the_same_instant():
    out = ingest.standardise(_frame(), require_label=True).frame
    assert set(out[F.EVENT_TIME]) == {1780355707}  # 2026-06-01T23:15:07Z in four spellings
    assert set(out[F.TIME_OF_DAY]) == {"afternoon"}  # 18:15 in Lima


def test_device_ids_are_case_and_separator_insensitive():
    out = ingest.standardise(_frame(), require_label=True).frame
    assert out[F.DEVICE_ID].nunique() == 2
    assert "dev3f9a21c0" in set(out[F.DEVICE_ID])


def test_optional_columns_absent_are_imputed_and_reported():
    result = ingest.standardise(_frame(), require_label=True)
    assert F.CITY in result.imputed_columns and F.USER_AGE in result.imputed_columns
    assert set(result.frame[F.CITY]) == {F.MISSING}
    assert result.frame[F.USER_AGE].isna().all()
    assert result.frame[F.AMOUNT].isna().sum() == 1  # empty amount -> NaN (median-imputed by Transform)


def test_missing_required_column_is_named():
    with pytest.raises(ingest.DataContractError, match="required column.*user_id"):
        ingest.standardise(_frame(**{F.USER_ID: None}), require_label=True)


def test_label_only_required_for_training():
    frame = _frame(**{F.LABEL: None})
    with pytest.raises(ingest.DataContractError, match=F.LABEL):
        ingest.standardise(frame, require_label=True)
    assert len(ingest.standardise(frame, require_label=False).frame) == 4


def test_scoring_keeps_the_labels_it_is_given_blanks_unknown():
    out = ingest.standardise(_frame(**{F.LABEL: ["1", "", "0", "1"]}), require_label=False).frame
    by_id = dict(zip(out[F.TRANSACTION_ID], out[F.LABEL]))
    assert by_id == {"t1": 1, "t2": F.UNKNOWN_LABEL, "t3": 0, "t4": 1}
    with pytest.raises(ingest.DataContractError, match="0, 1 or empty"):
        ingest.standardise(_frame(**{F.LABEL: ["1", "2", "0", "1"]}), require_label=False)


def test_scored_restaurant_fraud_rate_uses_the_inputs_labels_as_training_does():
    from fraud import behaviour as B

    day = 86400
    frame = pd.DataFrame({F.TRANSACTION_ID: [f"t{i}" for i in range(10)],
                          F.TIMESTAMP: [str(1780000000 + i * day) for i in range(10)],
                          F.AMOUNT: ["50"] * 10, F.USER_ID: [f"u{i}" for i in range(10)],
                          F.RESTAURANT_ID: ["R1"] * 10, F.LABEL: ["1", "0"] + [""] * 8})
    rate = "restaurant_fraud_rate_delayed_30d"
    scored = B.add_behaviour_columns(ingest.standardise(frame, require_label=False).frame)[rate].tolist()
    # Labels count once 7 days old: day 7 sees day 0 (fraud), days 8-9 see days 0-1 (one fraud of two known).
    assert scored == [0.0] * 7 + [1.0, 0.5, 0.5]
    trained = B.add_behaviour_columns(ingest.standardise(frame.assign(**{F.LABEL: ["1", "0"] + ["0"] * 8}),
                                                         require_label=True).frame)[rate].tolist()
    assert trained[:9] == scored[:9]  # the same code and labels: the same values (day 9 also knows day 2's 0)
    assert trained[9] == 1 / 3


def test_wrong_type_is_named_with_examples():
    with pytest.raises(ingest.DataContractError, match=r"'amount' must be numeric.*'abc'"):
        ingest.standardise(_frame(**{F.AMOUNT: ["1", "abc", "2", "3"]}), require_label=True)


def test_unparseable_timestamp_is_rejected():
    with pytest.raises(ingest.DataContractError, match="yesterday"):
        ingest.standardise(_frame(**{F.TIMESTAMP: ["2026-06-01T23:15:07Z", "yesterday", "1780355707",
                                                    "1780355707"]}), require_label=True)


def test_duplicate_ids_and_bad_labels_are_rejected():
    with pytest.raises(ingest.DataContractError, match="duplicate"):
        ingest.standardise(_frame(**{F.TRANSACTION_ID: ["a", "a", "b", "c"]}), require_label=True)
    with pytest.raises(ingest.DataContractError, match="0 or 1"):
        ingest.standardise(_frame(**{F.LABEL: ["0", "2", "0", "1"]}), require_label=True)


def test_empty_and_missing_data_dir(tmp_path):
    with pytest.raises(ingest.DataContractError, match="does not exist"):
        ingest.read_csv_dir(tmp_path / "nope")
    with pytest.raises(ingest.DataContractError, match="no \\*.csv"):
        ingest.read_csv_dir(tmp_path)
    (tmp_path / "t.csv").write_text(",".join(F.TRAINING_REQUIRED_COLUMNS) + "\n")
    with pytest.raises(ingest.DataContractError, match="no rows"):
        ingest.standardise(ingest.read_csv_dir(tmp_path), require_label=True)


def test_time_split_is_by_lima_calendar_day_and_never_overlaps():
    days = pd.date_range("2026-06-01 12:00", periods=30, freq="D", tz="America/Lima")
    frame = pd.DataFrame({
        F.TRANSACTION_ID: [f"t{i}" for i in range(30)],
        F.TIMESTAMP: [d.isoformat() for d in days],
        F.AMOUNT: ["10"] * 30, F.USER_ID: ["u"] * 30, F.LABEL: ["1", "0"] * 15,
    })
    standard = ingest.standardise(frame, require_label=True).frame
    splits = ingest.split_by_time(standard, eval_days=7, valid_days=5)
    assert [len(splits[s]) for s in F.SPLITS] == [18, 5, 7]
    assert splits[F.SPLIT_TRAIN][F.EVENT_TIME].max() < splits[F.SPLIT_VALID][F.EVENT_TIME].min()
    assert splits[F.SPLIT_VALID][F.EVENT_TIME].max() < splits[F.SPLIT_EVAL][F.EVENT_TIME].min()
    with pytest.raises(ingest.DataContractError, match="split 'train' is empty"):
        ingest.split_by_time(standard, eval_days=20, valid_days=10)


def test_csv_reading_keeps_every_value_as_written(tmp_path):
    """A byte-order mark, quoted commas and newlines, leading zeros, blanks and spaces are read as written."""
    (tmp_path / "a.csv").write_bytes(
        b'\xef\xbb\xbftransaction_id,amount,city\n007,"1,5"," Lima "\n008,,"multi\nline"\n')
    frame = ingest.read_csv_dir(tmp_path)
    assert list(frame.columns) == ["transaction_id", "amount", "city"]
    assert frame.to_dict("records") == [{"transaction_id": "007", "amount": "1,5", "city": " Lima "},
                                        {"transaction_id": "008", "amount": "", "city": "multi\nline"}]


@pytest.mark.parametrize("content,message", [
    (b"a,b\n1,2,3\n", "Expected 2 columns, got 3"),  # pandas would silently shift the row
    (b"a,b\ncaf\xe9,1\n", "UTF-8"), (b"caf\xe9,b\n1,2\n", "header is not UTF-8"), (b"", "is empty")])
def test_a_csv_that_cannot_be_read_is_named_with_the_reason(tmp_path, content, message):
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(ingest.DataContractError, match=message) as info:
        ingest.read_csv_dir(tmp_path)
    assert "bad.csv" in str(info.value)


def test_optional_columns_present_but_empty_standardise_as_absent_ones():
    """An export with every optional column in its header but no value in it gives the same standard rows as one
    without those columns (so validation, Transform and training see the same data either way)."""
    bare = _frame()
    empty = bare.assign(**{c: "" for c in F.OPTIONAL_STRING_COLUMNS + F.OPTIONAL_NUMERIC_COLUMNS})
    absent = bare.drop(columns=[c for c in bare.columns if c in F.OPTIONAL_STRING_COLUMNS])
    a = ingest.standardise(empty, require_label=True)
    b = ingest.standardise(absent, require_label=True)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.imputed_columns and set(b.imputed_columns) == set(F.OPTIONAL_STRING_COLUMNS + F.OPTIONAL_NUMERIC_COLUMNS)


def test_arrow_strip_and_sort_equal_pythons():
    """fraud.ingest's Arrow kernels give what pandas' Python path gives: strip trims exactly str.isspace's
    characters (every code point checked), values that are not all str (None, numbers) take pandas' path, and the
    time order sorts ties by id in code-point order, stable for equal keys."""
    import sys

    import numpy as np
    import pandas as pd

    from fraud.ingest import stripped, time_order

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    values = pd.Series([f"{c}a{c}b{c}" for c in chars], dtype=object)
    assert stripped(values).tolist() == values.str.strip().tolist()
    assert sum(c.isspace() for c in chars) > 20  # the check covers the exotic whitespace, not only " \t\n"
    mixed = pd.Series([" x ", None, 3, "\x1f y\u3000"], dtype=object)
    assert stripped(mixed).tolist() == mixed.astype(str).str.strip().tolist() == ["x", "None", "3", "y"]
    assert stripped(pd.Series([], dtype=object)).tolist() == []

    rng = np.random.default_rng(2)
    ids = pd.Series([rng.choice(["b", "a", "é", "z", "Ä", "10", "9", "a"]) + str(i % 3) for i in range(500)])
    times = pd.Series(rng.integers(0, 20, 500))
    frame = pd.DataFrame({"t": times, "id": ids})
    expected = frame.sort_values(["t", "id"], kind="stable").index.to_numpy()
    assert (time_order(times, ids) == expected).all()


def _general_or_none(parse, value):
    from fraud.errors import DataContractError

    try:
        return parse(pd.Series([value], dtype=object))[0]
    except DataContractError:
        return None


def test_fast_timestamp_shapes_agree_with_the_general_rules():
    """The Arrow/numpy path for the fixed shapes parses exactly what the general (pandas) path parses, and leaves
    every value it does not vouch for to that path: invalid dates, leap seconds, offsets, years pandas cannot hold."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    instants = pd.to_datetime(rng.integers(-2_000_000_000, 7_000_000_000, 300), unit="s")
    values = []
    for t in instants:
        values += [t.strftime("%Y-%m-%dT%H:%M:%S"), t.strftime("%Y-%m-%d %H:%M:%SZ"), t.strftime("%d/%m/%Y %H:%M:%S"),
                   t.strftime("%d/%m/%YT%H:%M:%S"), t.strftime("%Y-%m-%dT%H:%M:%S") + "-05:00",
                   t.strftime("%Y-%m-%dT%H:%M:%S") + f"+{rng.integers(0, 15):02d}:{rng.choice([0, 30, 45]):02d}"]
    values += ["2026-02-29T10:00:00Z", "2024-02-29T10:00:00Z", "2026-04-31T00:00:00", "2026-13-01T00:00:00",
               "2026-06-01T24:00:00Z", "2026-06-01T23:60:00Z", "2026-06-01T23:59:60Z", "1500-01-01T00:00:00Z",
               "2300-01-01T00:00:00Z", "2026-06-01T10:00:00+25:00", "2026-06-01T10:00:00+05:61", "31/02/2026 10:00:00",
               "00/06/2026 10:00:00", "01/00/2026 10:00:00", "1780355707", "1780355707.9", "0000-01-01T00:00:00Z",
               "2026-06-01T10:00:00.250Z", "1/6/2026 18:15:07", "01/06/2026 18:15"]
    seconds, done = ingest._fast_timestamps(pa.array(values, pa.string()))
    assert done.sum() > 0.9 * 6 * len(instants)  # the fast path does take the common shapes
    for value, fast, vouched in zip(values, seconds, done):
        if vouched:
            assert fast == _general_or_none(ingest._parse_timestamps_general, value), value
    assert ingest.parse_timestamps(pd.Series(values[:60])).tolist() == [
        _general_or_none(ingest._parse_timestamps_general, v) for v in values[:60]]


def test_fast_numbers_agree_with_pandas():
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(11)
    values = [f"{x:.{rng.integers(0, 9)}f}" for x in rng.lognormal(4, 2, 500)]  # <= 15 digits
    values += ["0", "-0", ".5", "5.", "0012.50", "-3.25", "1e3", "+2", "nan", "NaN", "inf", "1,5", "1_000",
               "123456789012345.123456789012345", "1234567890123456", "0x10", "."]
    numbers, done = ingest._fast_numbers(pa.array(values, pa.string()))
    assert done[:500].all()
    for value, fast, vouched in zip(values, numbers, done):
        if vouched:
            general = _general_or_none(lambda s: ingest._numbers_general(s, F.AMOUNT), value)
            assert fast == general and np.signbit(fast) == np.signbit(general), value
    frame = pd.DataFrame({F.AMOUNT: values[:500] + ["", "nan"]})
    expected = [float(v) for v in values[:500]] + [np.nan, np.nan]
    np.testing.assert_array_equal(ingest._numeric(frame, F.AMOUNT).to_numpy(), expected)


def test_device_ids_normalise_alike_on_both_paths():
    ascii_ids = pd.Series(["DEV-3F9A21C0", "dev_3f9a21c0", " Dev.3f9a ", "", "x:Y:z"], dtype=object)
    other = pd.Series(["DÉV-3F9A", "\u212a-1", "İd"], dtype=object)  # not ASCII: the Unicode rule
    for values in (ascii_ids, other, pd.concat([ascii_ids, other], ignore_index=True)):
        assert ingest.normalise_device_id(values).tolist() == [ingest.device_key(v) for v in values]
    # ASCII ids keep the fast path's rule: lower case, [0-9a-z] only.
    assert [ingest.device_key(v) for v in ascii_ids] == [ingest._SEPARATORS_RE.sub("", v.lower()) for v in ascii_ids]


def test_non_ascii_device_ids_stay_ids_and_every_unicode_spelling_is_one_id():
    """ÄÖÜ or 設備 are ids, not "" (which is no device at all); NFC and NFD spellings, full-width letters and
    case are one id, offline (a frame) and online (one record) alike."""
    import unicodedata

    spellings = ["Äpfel-7", unicodedata.normalize("NFD", "Äpfel-7"), "äPFEL 7", "Ａｐｆｅｌ７".replace("Ａ", "Ä")]
    others = ["ÄÖÜ", "設備-12", "設備12"]
    keys = ingest.normalise_device_id(pd.Series(spellings + others, dtype=object)).tolist()
    assert len(set(keys[:4])) == 1 and keys[0] == "äpfel7", keys
    assert keys[4] == "äöü" and keys[5] == keys[6] == "設備12"
    for raw, key in zip(spellings + others, keys):
        record = {F.TRANSACTION_ID: "t", F.TIMESTAMP: "2026-06-01T10:00:00Z", F.AMOUNT: "10", F.USER_ID: "u",
                  F.DEVICE_ID: raw}
        assert ingest.standardise_record(record)[F.DEVICE_ID] == key


def _export(tmp_path, text: bytes, name: str = "2026-06.csv"):
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(text)
    return folder


_HEAD = b"transaction_id,timestamp,amount,user_id,is_fraudulent\n"


def _rejected(call) -> str:
    from fraud.errors import EXIT_DATA_REJECTED, exit_code_for

    with pytest.raises(ingest.DataContractError) as info:
        call()
    assert exit_code_for(info.value) == EXIT_DATA_REJECTED  # exit 4 from every runner
    return str(info.value)


def test_bad_exports_are_rejected_naming_file_column_and_row(tmp_path):
    # Not UTF-8 (Latin-1 bytes in a row): the file is named.
    latin = _export(tmp_path / "a", _HEAD + b"t1,2026-06-01T10:00:00Z,10,Jos\xe9,0\n")
    message = _rejected(lambda: ingest.read_csv_dir(latin))
    assert "2026-06.csv" in message and "UTF-8" in message
    # The same column twice: no silent `amount.1`.
    twice = _export(tmp_path / "b", b"transaction_id,timestamp,amount,user_id,amount,is_fraudulent\n"
                                    b"t1,2026-06-01T10:00:00Z,10,u1,12,0\n")
    message = _rejected(lambda: ingest.read_csv_dir(twice))
    assert "2026-06.csv" in message and "'amount' more than once" in message
    # A row dated in the future would anchor the time split in 2099.
    future = _export(tmp_path / "c", _HEAD + b"t1,2026-06-01T10:00:00Z,10,u1,0\nt2,2099-01-01T00:00:00Z,10,u2,0\n")
    raw = ingest.read_csv_dir(future)
    message = _rejected(lambda: ingest.standardise(raw, require_label=True))
    assert "'timestamp'" in message and "1 row(s) are dated in the future" in message
    assert "transaction 't2' at '2099-01-01T00:00:00Z'" in message and "2026-06.csv, line 3" in message
    assert len(ingest.standardise(raw.iloc[:1], require_label=True).frame) == 1  # the good row alone is fine
    # Month-first dates: 01/13/2026 is not January 13th read silently.
    us = _export(tmp_path / "d", _HEAD + b"t1,12/01/2026 10:00:00,10,u1,0\nt2,01/13/2026 20:15:00,10,u2,0\n")
    message = _rejected(lambda: ingest.standardise(ingest.read_csv_dir(us), require_label=True))
    assert "'timestamp'" in message and "01/13/2026 20:15:00" in message and "month-first" in message
    with pytest.raises(ingest.DataContractError, match="month-first"):
        ingest.parse_timestamp("01/13/2026 20:15:00")
    assert ingest.parse_timestamp("13/01/2026 20:15") == ingest.parse_timestamp("13/01/2026 20:15:00")


def test_a_read_export_standardises_as_the_same_values_held_as_python_strings(tmp_path):
    """read_csv_dir hands standardise() Arrow-backed text; every shape (padded ids, each timestamp form, blanks,
    numbers the fast path leaves to pandas, non-ASCII devices) must come out as from plain str objects."""
    rows = [
        ("t1 ", "2026-03-01 12:00:00", "120.5", " u1", "40", "Lima", "DEV-01", "0"),
        ("t2", "01/03/2026 12:00:01", "1e2", "u2", "", "Cusco ", "設備-12", "1"),
        ("t3", "2026-03-01T17:00:02Z", " 7 ", "u1", "33.0", "", "", "0"),
        ("t4", "1772384403", "0.10", "u3", "nan", "Arequipa", "Ä-Ö", "0"),
        ("t5", "2026-03-01T12:00:04-05:00", "15", "u2", "29", "Lima", "dev 01", "1"),
    ]
    header = (F.TRANSACTION_ID, F.TIMESTAMP, F.AMOUNT, F.USER_ID, F.USER_AGE, F.CITY, F.DEVICE_ID, F.LABEL)
    pd.DataFrame(rows, columns=header).to_csv(tmp_path / "a.csv", index=False)
    read = ingest.read_csv_dir(tmp_path)
    as_objects = read.astype(object)
    assert all(dtype == object for dtype in as_objects.dtypes)
    fast = ingest.standardise(read, require_label=True).frame
    plain = ingest.standardise(as_objects, require_label=True).frame
    pd.testing.assert_frame_equal(fast, plain)
    assert fast[F.TRANSACTION_ID].tolist() == ["t1", "t2", "t3", "t4", "t5"]
    assert fast[F.AMOUNT].tolist() == [120.5, 100.0, 7.0, 0.1, 15.0]
    assert all(isinstance(v, str) for c in (F.TRANSACTION_ID, F.CITY, F.DEVICE_ID) for v in fast[c])
