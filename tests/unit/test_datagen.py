"""Tests for the synthetic transaction generator (fraud/synth/datagen.py)."""
from __future__ import annotations

import calendar
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud.synth import datagen
from fraud import features as F

START = dt.date(2026, 6, 1)
SMALL = dict(days=30, users=300)

# The four accepted timestamp spellings, and how to turn each into UTC epoch seconds. Written
# independently of the generator so that a formatting bug cannot hide behind shared code.
TS_PATTERNS = {
    "iso_utc": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"),
    "iso_lima": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}-05:00$"),
    "lima_naive": re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$"),
    "epoch": re.compile(r"^\d{10}$"),
}
DEVICE_ID = re.compile(r"^(DEV-[0-9A-F]{8}|dev_[0-9a-f]{8}|dev[0-9a-f]{8})$")


def _ts_kind(s: str) -> str:
    kinds = [k for k, rx in TS_PATTERNS.items() if rx.match(s)]
    assert len(kinds) == 1, f"timestamp {s!r} matches {kinds}"
    return kinds[0]


def _to_epoch(s: str) -> int:
    kind = _ts_kind(s)
    if kind == "epoch":
        return int(s)
    if kind == "iso_utc":
        return calendar.timegm(dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timetuple())
    if kind == "iso_lima":
        return int(dt.datetime.fromisoformat(s).timestamp())
    lima = dt.datetime.strptime(s, "%d/%m/%Y %H:%M:%S")
    return calendar.timegm(lima.timetuple()) - F.LIMA_UTC_OFFSET_HOURS * 3600


def _read_dir(path: Path) -> pd.DataFrame:
    files = sorted(path.glob("*.csv"))
    assert files, f"no CSV in {path}"
    return pd.concat(
        [pd.read_csv(f, dtype=str, keep_default_na=False).assign(_file=f.name) for f in files],
        ignore_index=True,
    )


def _dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """One medium data set shared by the read-only tests (enough rows for rate checks)."""
    out = tmp_path_factory.mktemp("medium") / "data"
    summary = datagen.generate(out, days=45, users=800, seed=11, start=START)
    return summary, out, _read_dir(out)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files(tmp_path):
    start = dt.date(2026, 6, 20)  # spans a month boundary, so two files are compared
    a = datagen.generate(tmp_path / "a", seed=5, start=start, **SMALL)
    b = datagen.generate(tmp_path / "b", seed=5, start=start, **SMALL)
    files_a, files_b = _dir_bytes(tmp_path / "a"), _dir_bytes(tmp_path / "b")
    assert list(files_a) == ["transactions-2026-06.csv", "transactions-2026-07.csv"]
    assert files_a == files_b
    assert (a.rows, a.fraud_rows, a.scenarios) == (b.rows, b.fraud_rows, b.scenarios)


def test_other_seed_gives_different_data(tmp_path):
    datagen.generate(tmp_path / "a", seed=5, **SMALL)
    datagen.generate(tmp_path / "b", seed=6, **SMALL)
    files_a, files_b = _dir_bytes(tmp_path / "a"), _dir_bytes(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] != files_b[name], name


# ---------------------------------------------------------------------------------------------
# Shape of the output
# ---------------------------------------------------------------------------------------------
def test_columns_files_and_summary(medium):
    summary, out, df = medium
    expected = [
        F.TRANSACTION_ID, F.TIMESTAMP, F.AMOUNT, F.CURRENCY, F.PAYMENT_METHOD, F.TRANSACTION_TYPE, F.USER_ID,
        F.HOME_CITY, F.USER_AGE, F.USER_GENDER, F.DEVICE_ID, F.IP_ADDRESS, F.DEVICE_TYPE, F.OS_VERSION,
        F.RESTAURANT_ID, F.CITY, F.LABEL, F.FRAUD_SCENARIO,
    ]
    for f in summary.files:
        assert Path(f).read_text().split("\n", 1)[0] == ",".join(expected)
    assert [Path(f).name for f in summary.files] == ["transactions-2026-06.csv", "transactions-2026-07.csv"]
    assert all(Path(f).parent == out for f in summary.files)
    assert summary.rows == len(df)
    assert summary.fraud_rows == int((df[F.LABEL] == "1").sum())
    assert summary.fraud_rate == pytest.approx(summary.fraud_rows / summary.rows)
    assert summary.scenarios == {s: int((df[F.FRAUD_SCENARIO] == s).sum()) for s in datagen.FRAUD_SCENARIOS}
    assert summary.first_day == START
    assert summary.last_day == START + dt.timedelta(days=44)
    assert df[F.TRANSACTION_ID].is_unique
    assert "\r" not in Path(summary.files[0]).read_text()


def test_rows_sorted_by_true_time_within_period_and_month(medium):
    _, _, df = medium
    epoch = df[F.TIMESTAMP].map(_to_epoch).to_numpy()
    t0 = calendar.timegm(START.timetuple()) - F.LIMA_UTC_OFFSET_HOURS * 3600
    assert epoch.min() >= t0 and epoch.max() < t0 + 45 * 86400
    lima_month = pd.to_datetime(epoch + F.LIMA_UTC_OFFSET_HOURS * 3600, unit="s").strftime("%Y-%m")
    assert (("transactions-" + lima_month + ".csv") == df["_file"]).all()
    for _, part in pd.Series(epoch).groupby(df["_file"]):
        assert (np.diff(part.to_numpy()) >= 0).all()


def test_values_are_clean_where_present(medium):
    _, _, df = medium
    amount = df.loc[df[F.AMOUNT] != "", F.AMOUNT].astype(float)  # raises if anything is non-numeric
    assert (amount > 0).all()
    assert set(df[F.CURRENCY]) == {"PEN", "USD"}
    assert set(df[F.PAYMENT_METHOD]) == {"credit_card", "debit_card", "mobile_wallet", "amex"}
    assert set(df[F.TRANSACTION_TYPE]) == {"dine_in", "reservation_deposit", "delivery", "tip_adjustment"}
    assert df[F.TRANSACTION_TYPE].value_counts(normalize=True)["dine_in"] > 0.6
    assert set(df[F.DEVICE_TYPE]) == {"pos_terminal", "ios", "android", "web"}
    assert set(df[F.USER_GENDER]) == {"F", "M", "X"}
    assert set(df[F.LABEL]) == {"0", "1"}
    assert df[F.USER_ID].str.fullmatch(r"U\d{5}").all()
    assert df[F.RESTAURANT_ID].str.fullmatch(r"R0[0-4]\d").all()
    ages = df.loc[df[F.USER_AGE] != "", F.USER_AGE].astype(int)
    assert ages.between(21, 80).all()
    assert set(df[F.CITY]) - {""} <= set(F.CITY_COORDS)
    assert set(df[F.HOME_CITY]) - {""} <= set(F.CITY_COORDS)
    foreign = {"Santiago", "Buenos Aires", "Bogota", "Sao Paulo", "New York", "Madrid"}
    assert not set(df[F.CITY]) & foreign  # restaurants are all in Peru
    assert set(df[F.HOME_CITY]) & foreign  # but tourists come from abroad
    assert df[F.IP_ADDRESS].str.fullmatch(r"\d{1,3}(\.\d{1,3}){3}").all()
    # POS payments are card present; app and web payments come from the user's own device.
    pos = df[F.DEVICE_TYPE] == "pos_terminal"
    assert df.loc[pos, F.OS_VERSION].str.startswith("pos_fw_").all()
    assert set(df.loc[df[F.TRANSACTION_TYPE] == "dine_in", F.DEVICE_TYPE]) == {"pos_terminal"}
    assert not pos[df[F.TRANSACTION_TYPE].isin(["delivery", "reservation_deposit"])].any()


# ---------------------------------------------------------------------------------------------
# Labels and fraud scenarios
# ---------------------------------------------------------------------------------------------
def test_fraud_rate_in_range(tmp_path):
    s = datagen.generate(tmp_path / "big", days=60, users=2000, seed=3)
    assert s.rows > 10_000
    assert 0.005 <= s.fraud_rate <= 0.02, s.fraud_rate
    df = _read_dir(tmp_path / "big")
    assert (df[F.LABEL] == "1").mean() == pytest.approx(s.fraud_rate)


def test_every_scenario_present_and_none_exactly_on_legit_rows(medium):
    summary, _, df = medium
    assert set(df[F.FRAUD_SCENARIO]) == {"none", *datagen.FRAUD_SCENARIOS}
    assert ((df[F.FRAUD_SCENARIO] == "none") == (df[F.LABEL] == "0")).all()
    assert all(n > 0 for n in summary.scenarios.values()), summary.scenarios


def test_every_scenario_present_even_in_small_data(tmp_path):
    s = datagen.generate(tmp_path / "small", days=14, users=50, seed=1)
    assert all(n > 0 for n in s.scenarios.values()), s.scenarios


def test_scenarios_have_their_signatures(medium):
    _, _, df = medium
    epoch = df[F.TIMESTAMP].map(_to_epoch)
    lima_hour = pd.to_datetime(epoch + F.LIMA_UTC_OFFSET_HOURS * 3600, unit="s").dt.hour
    amount = df[F.AMOUNT].replace("", np.nan).astype(float)
    pen = amount.where(df[F.CURRENCY] == "PEN", amount * F.USD_TO_PEN)
    scen = df[F.FRAUD_SCENARIO]
    legit_median = pen[scen == "none"].median()
    assert 250 <= legit_median <= 600

    testing = scen == "card_testing"
    assert (pen[testing].dropna() <= 20.0 + 1e-9).all()
    assert (df.loc[testing, F.DEVICE_TYPE] == "web").mean() > 0.5
    assert (df.loc[testing, F.TRANSACTION_TYPE] == "reservation_deposit").mean() > 0.5

    stolen = scen == "stolen_card"
    assert lima_hour[stolen].between(1, 4).mean() > 0.6
    assert pen[stolen].median() > 3 * legit_median
    assert lima_hour[scen == "none"].between(1, 4).mean() < 0.05

    ato = scen == "account_takeover"
    assert df.loc[ato, F.TRANSACTION_TYPE].isin(["delivery", "reservation_deposit"]).all()
    assert pen[ato].median() > 3 * legit_median

    # A stolen card is used far from home, on a device its holder never used legitimately.
    legit_rows = df[scen == "none"]
    legit_devices = set(zip(legit_rows[F.USER_ID], legit_rows[F.DEVICE_ID].str[-8:].str.upper()))
    stolen_rows = df.loc[stolen, [F.USER_ID, F.DEVICE_ID, F.HOME_CITY, F.CITY]]
    for user, device, home, city in stolen_rows.itertuples(index=False):
        assert (user, device[-8:].upper()) not in legit_devices
        if home and city:
            assert F.haversine_km(*F.CITY_COORDS[home], *F.CITY_COORDS[city]) >= 400

    # Some legit rows look like fraud, so the label is not a single-feature rule.
    legit = scen == "none"
    assert (legit & (pen > 2000)).sum() > 0
    assert (legit & (pen <= 20)).sum() > 0


# ---------------------------------------------------------------------------------------------
# Deliberate data problems
# ---------------------------------------------------------------------------------------------
def test_missing_values_at_documented_rates(medium):
    _, _, df = medium
    assert len(df) > 3000
    rates = {c: (df[c] == "").mean() for c in (F.AMOUNT, F.USER_AGE, F.HOME_CITY, F.CITY)}
    assert 0.01 <= rates[F.AMOUNT] <= 0.035, rates
    assert 0.035 <= rates[F.USER_AGE] <= 0.07, rates
    assert 0.01 <= rates[F.HOME_CITY] <= 0.035, rates
    assert 0.003 <= rates[F.CITY] <= 0.02, rates
    for c in (F.TRANSACTION_ID, F.TIMESTAMP, F.USER_ID, F.LABEL, F.CURRENCY, F.DEVICE_ID):
        assert (df[c] != "").all(), c


def test_timestamps_come_in_four_formats(medium):
    _, _, df = medium
    share = df[F.TIMESTAMP].map(_ts_kind).value_counts(normalize=True)  # fails on any unknown format
    assert set(share.index) == set(TS_PATTERNS)
    assert 0.50 <= share["iso_utc"] <= 0.60
    assert 0.16 <= share["iso_lima"] <= 0.24
    assert 0.11 <= share["lima_naive"] <= 0.19
    assert 0.07 <= share["epoch"] <= 0.13


def test_known_timestamp_spellings_agree():
    # The example of the data contract: one instant in the four spellings.
    assert {_to_epoch(s) for s in (
        "2026-06-01T23:15:07Z", "2026-06-01T18:15:07-05:00", "01/06/2026 18:15:07", "1780355707",
    )} == {1780355707}


def test_device_ids_spelled_differently_for_the_same_device(medium):
    _, _, df = medium
    dev = df[F.DEVICE_ID]
    assert dev.str.match(DEVICE_ID).all()
    canonical = dev.str.upper().str.replace("_", "", regex=False).str.replace("-", "", regex=False)
    canonical = "DEV-" + canonical.str[3:]
    spellings = dev.groupby(canonical).nunique()
    assert (spellings == 3).sum() > 10  # the same terminal seen as DEV-..., dev_... and dev...
    variant_share = (~dev.str.startswith("DEV-")).mean()
    assert 0.07 <= variant_share <= 0.13


def test_amount_outliers_are_legitimate_banquets(medium):
    _, _, df = medium
    amount = df[F.AMOUNT].replace("", np.nan).astype(float)
    pen = amount.where(df[F.CURRENCY] == "PEN", amount * F.USD_TO_PEN)
    huge = pen > 10_000
    assert huge.sum() >= 1
    assert (df.loc[huge, F.LABEL] == "0").all()
    assert pen.max() <= 25_000 + 1


# ---------------------------------------------------------------------------------------------
# Safety of the output directory and arguments
# ---------------------------------------------------------------------------------------------
def test_refuses_non_empty_output_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="not empty"):
        datagen.generate(out, **SMALL)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_writes_into_existing_empty_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    s = datagen.generate(out, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == [Path(f).name for f in s.files]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dir left behind


def test_failed_run_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    written = []

    def explode_after_first_file(msg: str) -> None:
        if msg.startswith("wrote"):
            written.append(msg)
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        datagen.generate(out, progress=explode_after_first_file, **SMALL)
    assert written  # the failure really happened after a file was on disk
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [
    dict(days=13), dict(users=49), dict(days=0), dict(users=-1), dict(days=30.5), dict(seed=-1),
    dict(start="2026-06-01"), dict(start=dt.datetime(2026, 6, 1)),
])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        datagen.generate(tmp_path / "out", **{**SMALL, **kwargs})
    assert not (tmp_path / "out").exists()
