"""Read and standardise the transactions table: the data contract, enforced in one place.

Used by the ingestion component (training data) and by `fraudctl score` (backtesting), so both see
exactly the same standardised rows. Where the raw table comes from (a CSV folder, a database) is
fraud.sources' business; this module only reads CSV folders and knows nothing of databases.

Standardisation:
- `timestamp` accepts four formats and becomes `event_time_utc` (int64 seconds, UTC):
  ISO 8601 with `Z` or an offset (`2026-06-01T23:15:07Z`, `2026-06-01T18:15:07-05:00`),
  Lima local time without zone (`01/06/2026 18:15:07`, DD/MM/YYYY, Lima = UTC-5, no DST),
  and Unix epoch seconds (`1780355707`). ISO 8601 without a zone is taken as Lima local time.
- `device_id` is case- and separator-insensitive: `DEV-3F9A21C0`, `dev_3f9a21c0` -> `dev3f9a21c0`.
- Optional columns that are absent or empty: strings become "" (their own vocabulary entry),
  numbers become NaN (median-imputed inside the Transform graph, so serving does the same).
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud import features as F
from fraud import timeutil
from fraud.errors import DataContractError

__all__ = ["DataContractError", "Standardised", "list_csv_files", "normalise_device_id", "parse_timestamps",
           "parse_timestamp", "read_csv_dir", "split_by_time", "standardise", "standardise_record"]
_EPOCH_RE = re.compile(r"^\d{9,11}(\.\d+)?$")
_LOCAL_RE = re.compile(r"^\d{1,2}/\d{1,2}/\d{4}[ T]\d{1,2}:\d{2}(:\d{2})?$")
_SEPARATORS_RE = re.compile(r"[^0-9a-z]")
_ZONE_RE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def list_csv_files(data_dir: str | Path) -> list[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataContractError(
            f"data directory {str(data_dir)!r} does not exist; create one with `fraudctl generate --out DIR`")
    files = sorted(p for p in data_dir.iterdir() if p.suffix == ".csv" and p.is_file())
    if not files:
        raise DataContractError(f"no *.csv files in {str(data_dir)!r}: the transactions table is empty")
    return files


def read_csv(path: str | Path) -> pd.DataFrame:
    """One CSV file, every column as a string, empty cells as "" (types are checked by standardise()).

    Read by Arrow's multi-threaded CSV reader (several times pandas' speed on large exports); a UTF-8 byte-order
    mark is skipped, quoted values may hold commas and newlines."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    path = Path(path)
    names = _header(path)
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "UTF8" in reason or isinstance(exc, UnicodeDecodeError):
            reason += " (save the file as UTF-8)"
        raise DataContractError(f"cannot read {str(path)!r} as CSV: {reason}") from None
    # Arrow-backed strings: no Python object per value until a column is kept as text (standardise() reads the
    # numbers and timestamps straight from Arrow), which is most of the reading cost saved on large exports.
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _header(path: Path) -> list[str]:
    import csv

    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise DataContractError(f"{str(path)!r} is empty: a CSV file needs at least its header")
    try:
        names = next(csv.reader([first.decode("utf-8-sig")]))
    except UnicodeDecodeError:
        raise DataContractError(f"cannot read {str(path)!r} as CSV: its header is not UTF-8 (save the file "
                                "as UTF-8)") from None
    stripped_names = [n.strip() for n in names]
    repeated = sorted({n for n in stripped_names if stripped_names.count(n) > 1})
    if repeated:
        raise DataContractError(f"{str(path)!r}: the header names column(s) {', '.join(map(repr, repeated))} more "
                                "than once; each column must appear once (which one holds the data?)")
    return names


_FILES_ATTR = "fraud_source_files"  # read_csv_dir's frame.attrs: [(file, rows)], for row_location


def read_csv_dir(data_dir: str | Path) -> pd.DataFrame:
    """Read every *.csv in a directory as strings (types are checked by standardise())."""
    paths = list_csv_files(data_dir)
    frames = [read_csv(path) for path in paths]
    columns = {tuple(f.columns) for f in frames}
    if len({frozenset(c) for c in columns}) > 1:
        raise DataContractError(f"the CSV files in {str(data_dir)!r} have different columns: {sorted(columns)}")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame.attrs[_FILES_ATTR] = [(str(p), len(f)) for p, f in zip(paths, frames)]  # for errors: file and line
    return frame


def row_location(raw: pd.DataFrame, label) -> str:
    """Where a row of read_csv_dir's frame came from, as " (FILE, line N)", or "" for other sources."""
    files = raw.attrs.get(_FILES_ATTR)
    try:
        position = raw.index.get_loc(label)
    except KeyError:
        return ""
    if not files or not isinstance(position, int):
        return ""
    for path, rows in files:
        if position < rows:
            return f" ({path}, line {position + 2})"  # line 1 is the header
        position -= rows
    return ""


def stripped(values: pd.Series) -> pd.Series:
    """`values.astype(str).str.strip()`, by Arrow's string kernel when every value is a str: it trims exactly the
    characters Python's str.isspace names (tests/unit/test_ingest.py checks every code point), in C++ instead of
    one Python call per value. Anything else (None from a database, numbers) takes pandas' own path."""
    return _stripped(values)[0]


def _stripped(values: pd.Series):
    """(stripped values, the same as an Arrow string array or None): the fast paths below reuse the array."""
    import pyarrow.compute as pc

    array = _arrow_strings(values)
    if array is None:
        return _as_objects(values).astype(str).str.strip(), None
    trimmed = pc.utf8_trim_whitespace(array)
    if pc.sum(pc.binary_length(trimmed)) == pc.sum(pc.binary_length(array)):  # nothing trimmed (the usual case):
        return values, array  # the same values, without new objects
    return pd.Series(trimmed.to_numpy(zero_copy_only=False), index=values.index, dtype=object), trimmed


def time_order(times: pd.Series, ids: pd.Series) -> np.ndarray:
    """Row positions in (time, transaction id) order, ties kept in place: Arrow's stable sort (string ids compared
    as UTF-8 bytes, which is code-point order, as Python compares them), ~5x pandas' sort on object strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    id_array = _arrow_strings(ids)
    if id_array is None:
        id_array = pa.array(ids.astype(str).to_numpy(), pa.string())
    table = pa.table({"time": pa.array(times.to_numpy()), "id": id_array})
    return pc.sort_indices(table, sort_keys=[("time", "ascending"), ("id", "ascending")]).to_numpy()


# ---------------------------------------------------------------------------------------------------------------
# Column fast paths: the common shapes of a value, checked by a regular expression (RE2, in C++) and converted
# with Arrow and numpy; every other value takes the general pandas path, so the rules stay those written above.
# tests/unit/test_ingest.py holds both paths equal on every shape, valid and invalid.
# ---------------------------------------------------------------------------------------------------------------
_ISO_FIXED = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})?$"  # lengths 19, 20, 25
_LOCAL_FIXED = r"^\d{2}/\d{2}/\d{4}[ T]\d{2}:\d{2}:\d{2}$"  # length 19
_PLAIN_DECIMAL = r"^(\d{1,15}(\.\d{0,15})?|\.\d{1,15})$"  # unsigned: pandas reads "-0" as 0.0


def _arrow_strings(values: pd.Series):
    """The values as an Arrow string array without nulls, or None when they are not all str."""
    import pyarrow as pa

    if _arrow_backed(values) and len(values):
        array = pa.array(values.array)  # read_csv's columns: Arrow's own array, no copy of the values
        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        return array if array.null_count == 0 else None
    if values.dtype != object or not len(values):
        return None
    try:
        array = pa.array(values.to_numpy(), type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return array if array.null_count == 0 else None


def _fixed_width_digits(array, width: int) -> np.ndarray:
    """An Arrow string array whose values all have `width` bytes -> a (rows, width) array of byte values."""
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8)
    return data[offsets[0]:offsets[-1]].reshape(len(array), width)


def _number_at(chars: np.ndarray, start: int, digits: int) -> np.ndarray:
    out = np.zeros(len(chars), np.int64)
    for k in range(start, start + digits):
        out = out * 10 + (chars[:, k].astype(np.int64) - 48)
    return out


def _civil_seconds(year, month, day, hour, minute, second):
    """Seconds since the epoch of a wall-clock time (as if it were UTC), and whether each field is in range."""
    # pandas' nanosecond timestamps end in 1677 and 2262: other years take its path (and its error)
    ok = (year >= 1678) & (year <= 2261) & (month >= 1) & (month <= 12) & (day >= 1) & (hour <= 23)
    ok &= (minute <= 59) & (second <= 59)
    months = (year - 1970) * 12 + np.clip(month, 1, 12) - 1
    first = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    following = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    ok &= day <= following - first
    return (first + day - 1) * F.DAY_S + hour * 3600 + minute * 60 + second, ok


def _count_distinct(array) -> int:
    import pyarrow.compute as pc

    return pc.count_distinct(array).as_py()


def _arrow_backed(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"


def _as_objects(values: pd.Series) -> pd.Series:
    """Arrow-backed strings as plain str objects, for the general (pandas) paths and the standard frame."""
    return values.astype(object) if _arrow_backed(values) else values


def _fast_timestamps(array) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, parsed) for the fixed ISO 8601, DD/MM/YYYY and epoch shapes; parsed False elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seconds = np.zeros(len(array), np.int64)
    parsed = np.zeros(len(array), bool)
    lengths = pc.binary_length(array).to_numpy()
    epoch = pc.match_substring_regex(array, _EPOCH_RE.pattern).to_numpy(zero_copy_only=False)
    if epoch.any():
        where = np.flatnonzero(epoch)
        numbers = pc.cast(array.take(pa.array(where)), pa.float64()).to_numpy()
        seconds[where], parsed[where] = numbers.astype(np.int64), True
    for pattern, widths in ((_ISO_FIXED, (19, 20, 25)), (_LOCAL_FIXED, (19,))):
        shaped = pc.match_substring_regex(array, pattern).to_numpy(zero_copy_only=False) & ~parsed
        for width in widths:
            where = np.flatnonzero(shaped & (lengths == width))
            if not len(where):
                continue
            chars = _fixed_width_digits(array.take(pa.array(where)), width)
            if pattern is _LOCAL_FIXED:
                wall, ok = _civil_seconds(_number_at(chars, 6, 4), _number_at(chars, 3, 2), _number_at(chars, 0, 2),
                                          _number_at(chars, 11, 2), _number_at(chars, 14, 2), _number_at(chars, 17, 2))
                utc = timeutil.from_lima(wall)
            else:
                wall, ok = _civil_seconds(_number_at(chars, 0, 4), _number_at(chars, 5, 2), _number_at(chars, 8, 2),
                                          _number_at(chars, 11, 2), _number_at(chars, 14, 2), _number_at(chars, 17, 2))
                if width == 19:  # no zone: Lima local time
                    utc = timeutil.from_lima(wall)
                elif width == 20:  # Z
                    utc = wall
                else:
                    off_h, off_m = _number_at(chars, 20, 2), _number_at(chars, 23, 2)
                    ok &= (off_h <= 23) & (off_m <= 59)
                    sign = np.where(chars[:, 19] == ord("-"), -1, 1)
                    utc = wall - sign * (off_h * 3600 + off_m * 60)
            seconds[where[ok]], parsed[where[ok]] = utc[ok], True
    return seconds, parsed


def _fast_numbers(array) -> tuple[np.ndarray, np.ndarray]:
    """(numbers, parsed) for plain unsigned decimals of at most 15 digits; parsed False elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # At most 15 significant digits: exact in a double before the one scaling, so any parser rounds alike (pandas'
    # own parser is not correctly rounded beyond that; Arrow's is).
    plain = pc.match_substring_regex(array, _PLAIN_DECIMAL).to_numpy(zero_copy_only=False)
    dot = pc.match_substring(array, ".").to_numpy(zero_copy_only=False)
    plain &= pc.binary_length(array).to_numpy() - dot <= 15
    numbers = np.full(len(array), np.nan)
    if plain.all():
        numbers = pc.cast(array, pa.float64()).to_numpy()
    elif plain.any():
        where = np.flatnonzero(plain)
        numbers[where] = pc.cast(array.take(pa.array(where)), pa.float64()).to_numpy()
    return numbers, plain


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse the accepted timestamp formats into int64 UTC epoch seconds; raise on anything else."""
    values, array = _stripped(values)
    if array is not None:
        seconds, done = _fast_timestamps(array)
        if done.all():
            return pd.Series(seconds, index=values.index)
        out = pd.Series(seconds, index=values.index)
        out[~done] = _parse_timestamps_general(_as_objects(values[~done])).to_numpy()
        return out
    return _parse_timestamps_general(_as_objects(values))


def _parse_timestamps_general(values: pd.Series) -> pd.Series:
    out = pd.Series(np.zeros(len(values), dtype=np.int64), index=values.index)
    parsed = pd.Series(False, index=values.index)

    epoch = values.str.match(_EPOCH_RE)
    out[epoch] = values[epoch].astype(float).astype(np.int64)
    parsed |= epoch

    local = values.str.match(_LOCAL_RE)
    if local.any():
        # Day first, and only day first: 01/13/2026 is no date (month 13), not January 13th read silently.
        text = values[local].str.replace("T", " ", regex=False)
        naive = pd.to_datetime(text, format="%d/%m/%Y %H:%M:%S", errors="coerce")
        retry = naive.isna()
        if retry.any():
            naive[retry] = pd.to_datetime(text[retry], format="%d/%m/%Y %H:%M", errors="coerce")
        ok = naive.notna()
        seconds = timeutil.from_lima(naive[ok].astype("int64") // 10**9)  # Lima local -> UTC
        out[seconds.index] = seconds
        parsed[seconds.index] = True

    rest = ~parsed & ~local & (values != "")
    if rest.any():
        # ISO 8601: with Z or an offset it is absolute; without a zone it is Lima local time, like the
        # DD/MM/YYYY form that restaurant terminals write.
        iso = pd.to_datetime(values[rest], utc=True, errors="coerce")
        ok = iso.notna()
        seconds = iso[ok].astype("int64") // 10**9
        naive = ~values[rest][ok].str.contains(_ZONE_RE)
        seconds[naive] = timeutil.from_lima(seconds[naive])
        out[seconds.index] = seconds
        parsed[seconds.index] = True

    bad = ~parsed
    ambiguous = bad & local
    if ambiguous.any():
        examples = values[ambiguous].head(3).tolist()
        raise DataContractError(
            f"column {F.TIMESTAMP!r}: {int(ambiguous.sum())} value(s) look like DD/MM/YYYY but are no such date, "
            f"e.g. {examples}: is the file month-first (MM/DD/YYYY)? Convert it to ISO 8601 (YYYY-MM-DD HH:MM:SS), "
            "which cannot be misread")
    if bad.any():
        examples = values[bad].head(3).tolist()
        raise DataContractError(
            f"column {F.TIMESTAMP!r}: {int(bad.sum())} value(s) are not a timestamp in an accepted format "
            f"(ISO 8601, DD/MM/YYYY HH:MM:SS Lima time, epoch seconds), e.g. {examples}")
    return out


def normalise_device_id(values: pd.Series, *, arrow: bool = False) -> pd.Series:
    """Every value as device_key() gives it. `arrow`: the Arrow fast path may return Arrow-backed strings."""
    array = _arrow_strings(values)
    if array is not None:
        import pyarrow.compute as pc

        if pc.all(pc.string_is_ascii(array)).as_py() is not False:  # ASCII: Arrow's lower-casing is Python's
            lowered = pc.replace_substring_regex(pc.ascii_lower(array), _SEPARATORS_RE.pattern, "")
            if arrow:
                return pd.Series(pd.arrays.ArrowStringArray(lowered), index=values.index)
            return pd.Series(lowered.to_numpy(zero_copy_only=False), index=values.index, dtype=object)
    return values.astype(str).map(device_key)


def device_key(value: str) -> str:
    """A device id as one key whatever its spelling: Unicode-normalised (NFKC, so NFC and NFD spellings, or
    full-width letters, are one id), case-folded, letters and digits of any script kept, separators dropped.
    For ASCII ids that is: lower case, only [0-9a-z] kept (normalise_device_id's Arrow path does it per column)."""
    if value.isascii():
        return _SEPARATORS_RE.sub("", value.lower())
    text = unicodedata.normalize("NFKC", value).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    raw, array = _stripped(frame[column])
    if array is not None:
        numbers, done = _fast_numbers(array)
        if not done.all():
            rest = ~done
            numbers[rest] = _numbers_general(_as_objects(raw[rest]), column).to_numpy()
        return pd.Series(numbers, index=raw.index)
    return _numbers_general(_as_objects(raw), column)


def _numbers_general(raw: pd.Series, column: str) -> pd.Series:
    numbers = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
    bad = numbers.isna() & (raw != "") & (raw.str.lower() != "nan")
    if bad.any():
        raise DataContractError(
            f"column {column!r} must be numeric: {int(bad.sum())} value(s) are not numbers, "
            f"e.g. {raw[bad].head(3).tolist()}")
    return numbers.astype(np.float64)


_TIMES_OF_DAY = np.array([F.time_of_day(hour) for hour in range(24)], dtype=object)


@dataclass(frozen=True)
class Standardised:
    frame: pd.DataFrame
    rows_in: int
    imputed_columns: tuple[str, ...]  # optional columns absent from the input


MAX_FUTURE_S = 86400  # a timestamp later than now + this is an error, not the newest transaction


def standardise(raw: pd.DataFrame, *, require_label: bool, now: float | None = None) -> Standardised:
    """Check the contract and return the standard frame, sorted by event time.

    `require_label`: every row must carry a 0/1 label (training). Without it, a label column that is present
    is kept (0, 1, or blank = F.UNKNOWN_LABEL), so scoring sees the labels known so far, as the pipeline did."""
    required = F.TRAINING_REQUIRED_COLUMNS if require_label else F.REQUIRED_COLUMNS
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataContractError(
            f"required column(s) missing: {', '.join(missing)} (found: {', '.join(raw.columns) or 'none'})")
    if len(raw) == 0:
        raise DataContractError("the transactions table has no rows")

    # Columns are gathered as Series (raw's index, for the messages) and built into one frame in time order at
    # the end: a frame grown column by column and then reordered costs a copy of every column twice.
    out: dict = {}
    for column in (F.TRANSACTION_ID, F.USER_ID):
        out[column] = stripped(raw[column])
        empty = out[column] == ""
        if empty.any():
            raise DataContractError(f"required column {column!r} is empty in {int(empty.sum())} row(s)")
    ids = _arrow_strings(out[F.TRANSACTION_ID])
    if ids is None or _count_distinct(ids) < len(ids):  # Arrow's count first: pandas only to name them
        duplicated = out[F.TRANSACTION_ID].duplicated()
    else:
        duplicated = pd.Series(False, index=out[F.TRANSACTION_ID].index)
    if duplicated.any():
        raise DataContractError(
            f"column {F.TRANSACTION_ID!r} has {int(duplicated.sum())} duplicate id(s), "
            f"e.g. {out[F.TRANSACTION_ID][duplicated].head(3).tolist()}")

    out[F.EVENT_TIME] = parse_timestamps(raw[F.TIMESTAMP])
    latest = (time.time() if now is None else now) + MAX_FUTURE_S
    future = out[F.EVENT_TIME] > latest
    if future.any():
        first = future.idxmax()
        when = str(raw[F.TIMESTAMP][first]).strip()
        raise DataContractError(
            f"column {F.TIMESTAMP!r}: {int(future.sum())} row(s) are dated in the future, e.g. transaction "
            f"{out[F.TRANSACTION_ID][first]!r} at {when!r}{row_location(raw, first)}. The time split is anchored "
            "on the latest timestamp, so one such row moves every split: fix or drop them (a clock or time-zone "
            "error?)")
    out[F.AMOUNT] = _numeric(raw, F.AMOUNT)
    negative = out[F.AMOUNT] < 0
    if negative.any():
        raise DataContractError(f"column {F.AMOUNT!r} has {int(negative.sum())} negative value(s)")

    imputed = []
    for column in F.OPTIONAL_NUMERIC_COLUMNS:
        if column in raw.columns:
            out[column] = _numeric(raw, column)
        else:
            out[column] = pd.Series(np.nan, index=raw.index)
            imputed.append(column)
    for column in F.OPTIONAL_STRING_COLUMNS:
        if column in raw.columns:
            out[column] = stripped(raw[column])
        else:
            out[column] = pd.Series(F.MISSING, index=raw.index, dtype=object)
            imputed.append(column)
    out[F.DEVICE_ID] = normalise_device_id(out[F.DEVICE_ID], arrow=True)
    if F.FRAUD_SCENARIO not in raw.columns:
        out[F.FRAUD_SCENARIO] = pd.Series(F.MISSING, index=raw.index, dtype=object)
    else:
        out[F.FRAUD_SCENARIO] = raw[F.FRAUD_SCENARIO] if _arrow_backed(raw[F.FRAUD_SCENARIO]) else \
            raw[F.FRAUD_SCENARIO].astype(str)

    if require_label:
        label = _numeric(raw, F.LABEL)
        bad = label.isna() | ~label.isin([0.0, 1.0])
        if bad.any():
            raise DataContractError(
                f"label column {F.LABEL!r} must be 0 or 1 in every row; {int(bad.sum())} row(s) are not")
        out[F.LABEL] = label.astype(np.int64)
    elif F.LABEL in raw.columns:
        # Scoring with history: the labels known so far feed the delayed-label features exactly as in training
        # (a backtest must reproduce what the pipeline measured); a blank label is not known yet.
        label = _numeric(raw, F.LABEL)
        bad = label.notna() & ~label.isin([0.0, 1.0])
        if bad.any():
            raise DataContractError(
                f"label column {F.LABEL!r} must be 0, 1 or empty; {int(bad.sum())} row(s) are not")
        out[F.LABEL] = label.fillna(F.UNKNOWN_LABEL).astype(np.int64)

    out[F.TIME_OF_DAY] = _TIMES_OF_DAY[timeutil.lima_hour(out[F.EVENT_TIME].to_numpy())]
    order = time_order(out[F.EVENT_TIME], out[F.TRANSACTION_ID])
    return Standardised(frame=_frame_in_order(out, order), rows_in=len(raw), imputed_columns=tuple(imputed))


def _frame_in_order(columns: dict, order: np.ndarray) -> pd.DataFrame:
    """One frame of `columns` (Series or arrays of equal length) with its rows in `order`: reordered and turned
    into pandas columns by Arrow (text as str objects, made once per value, in order), not column by column."""
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        text = _arrow_strings(values) if isinstance(values, pd.Series) else None
        arrays[name] = text if text is not None else pa.array(np.asarray(values))
    return pa.table(arrays).take(pa.array(order)).to_pandas()


# ---------------------------------------------------------------------------------------------------------------
# One record at a time (the decision service): the same rules, without pandas' per-call cost (~10 ms a frame).
# tests/unit/test_ingest_record.py checks that every record standardises to its row of standardise()'s frame.
# ---------------------------------------------------------------------------------------------------------------
def parse_timestamp(value) -> int:
    """One timestamp -> int UTC epoch seconds, by parse_timestamps' rules."""
    text = str(value).strip()
    if _EPOCH_RE.match(text):
        return int(float(text))
    if _LOCAL_RE.match(text):
        for form in ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"):
            try:
                naive = dt.datetime.strptime(text.replace("T", " "), form)
            except ValueError:
                continue
            return int(timeutil.from_lima(calendar.timegm(naive.timetuple())))
        raise DataContractError(
            f"column {F.TIMESTAMP!r}: {text!r} looks like DD/MM/YYYY but is no such date: is it month-first "
            "(MM/DD/YYYY)? Send ISO 8601 (YYYY-MM-DD HH:MM:SS), which cannot be misread")
    if text:
        try:  # the common ISO 8601 forms, without pandas' per-call cost; anything else goes through pandas
            parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                return int(timeutil.from_lima(calendar.timegm(parsed.timetuple())))
            return calendar.timegm(parsed.utctimetuple())
        iso = pd.to_datetime(text, utc=True, errors="coerce")
        if iso is not pd.NaT:
            seconds = iso.value // 10**9
            return int(seconds if _ZONE_RE.search(text) else timeutil.from_lima(seconds))
    raise DataContractError(
        f"column {F.TIMESTAMP!r}: {text!r} is not a timestamp in an accepted format "
        f"(ISO 8601, DD/MM/YYYY HH:MM:SS Lima time, epoch seconds)")


def _number(record, column: str) -> float:
    text = str(record[column]).strip()
    if text == "":
        return math.nan
    number = pd.to_numeric(text, errors="coerce")
    if pd.isna(number) and text.lower() != "nan":
        raise DataContractError(f"column {column!r} must be numeric, got {text!r}")
    return float(number)


def _text(record, column: str) -> str:
    return str(record.get(column, F.MISSING)).strip()


def standardise_record(record: dict, *, require_label: bool = False) -> dict:
    """One raw record (column -> value as the CSV holds it) -> its standardised row, the same dict as its row of
    standardise()'s frame; DataContractError naming the field otherwise."""
    required = F.TRAINING_REQUIRED_COLUMNS if require_label else F.REQUIRED_COLUMNS
    missing = [c for c in required if c not in record]
    if missing:
        raise DataContractError(f"required field(s) missing: {', '.join(missing)}")
    out = {}
    for column in (F.TRANSACTION_ID, F.USER_ID):
        out[column] = _text(record, column)
        if out[column] == "":
            raise DataContractError(f"required field {column!r} is empty")
    out[F.EVENT_TIME] = parse_timestamp(record[F.TIMESTAMP])
    out[F.AMOUNT] = _number(record, F.AMOUNT)
    if out[F.AMOUNT] < 0:
        raise DataContractError(f"field {F.AMOUNT!r} is negative")
    for column in F.OPTIONAL_NUMERIC_COLUMNS:
        out[column] = _number(record, column) if column in record else math.nan
    for column in F.OPTIONAL_STRING_COLUMNS:
        out[column] = _text(record, column)
    out[F.DEVICE_ID] = device_key(out[F.DEVICE_ID])
    out[F.FRAUD_SCENARIO] = str(record.get(F.FRAUD_SCENARIO, F.MISSING))
    if require_label or F.LABEL in record:
        label = _number(record, F.LABEL)
        if math.isnan(label) and not require_label:
            label = F.UNKNOWN_LABEL
        elif label not in (0.0, 1.0):
            raise DataContractError(f"label field {F.LABEL!r} must be 0 or 1" + ("" if require_label else
                                                                                   " or empty"))
        out[F.LABEL] = int(label)
    out[F.TIME_OF_DAY] = F.time_of_day(timeutil.lima_hour(out[F.EVENT_TIME]))
    return out


def raw_in_time_order(raw: pd.DataFrame, standard: pd.DataFrame) -> pd.DataFrame:
    """The raw rows, as the source holds them, in the order of their standardised frame (event time, then
    transaction id): how a stream replays them (the decision service's replay, its tests and benchmark)."""
    order = {tid: i for i, tid in enumerate(standard[F.TRANSACTION_ID])}
    position = raw[F.TRANSACTION_ID].astype(str).str.strip().map(order)
    return raw.iloc[position.to_numpy().argsort(kind="stable")]


def split_by_time(frame: pd.DataFrame, *, eval_days: int, valid_days: int) -> dict[str, pd.DataFrame]:
    """Time split: eval = the last `eval_days` days, valid = the `valid_days` before, train = the rest.

    Days are Lima calendar days, counted back from the last day present in the data.
    """
    lima_day = timeutil.lima_day(frame[F.EVENT_TIME])
    last = int(lima_day.max())
    eval_start = last - eval_days + 1
    valid_start = eval_start - valid_days
    splits = {
        F.SPLIT_TRAIN: frame[lima_day < valid_start],
        F.SPLIT_VALID: frame[(lima_day >= valid_start) & (lima_day < eval_start)],
        F.SPLIT_EVAL: frame[lima_day >= eval_start],
    }
    for name, part in splits.items():
        if len(part) == 0:
            span = int(last - lima_day.min() + 1)
            raise DataContractError(
                f"split {name!r} is empty: the data spans {span} day(s), eval takes {eval_days} and valid "
                f"{valid_days}; use more data or a smaller --eval-days")
    if F.LABEL in frame.columns:
        for name, part in splits.items():
            if part[F.LABEL].sum() == 0:
                raise DataContractError(f"split {name!r} has no fraudulent rows: the model cannot be trained "
                                        "or evaluated; use more days of data")
    return splits
