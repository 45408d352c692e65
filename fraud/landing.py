"""The stream lands as training data: decided transactions in hourly CSV files the pipeline reads as they are.

    <landing>/transactions-YYYYMMDD-HH.csv    one UTC hour of event time, the data contract's columns, labelled
    <landing>/.staging/YYYYMMDD-HH.jsonl      the hour while it fills (never read by the pipeline)

An hour is written out once the stream's event time has passed its end by the label delay (LABEL_DELAY_DAYS,
as the pipeline's delayed-label features assume): every chargeback posted by then (POST /v1/labels) is joined
in, and a transaction without one is labelled legitimate (0), as a card network's chargeback window closes. The
file is written to a temporary name, fsynced and renamed, so the pipeline never sees half a file; then the
staging file is removed (a crash in between: the next finalisation sees the file and only removes it).

Rows are appended to the staging file (fsynced) before the consumer acknowledges their messages, so nothing
acknowledged is lost; a message re-delivered after a crash may be appended twice, and the finalisation keeps
the first row of each transaction id. A staging file cut short by a crash loses only its unfinished last line
(whose messages were not acknowledged and come again).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from fraud import atomic
from fraud import features as F

# The contract's columns as a landed file holds them: the label last, no generator-only column.
LANDED_COLUMNS = tuple(c for c in F.CONTRACT_COLUMNS if c not in (F.LABEL, F.FRAUD_SCENARIO)) + (F.LABEL,)
STAGING = ".staging"
HOUR_S = 3600


def hour_name(event_time: int) -> str:
    return time.strftime("%Y%m%d-%H", time.gmtime(int(event_time) // HOUR_S * HOUR_S))


def hour_start(name: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(name, "%Y%m%d-%H"))


def landed_file(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"transactions-{name}.csv"


class Landing:
    def __init__(self, directory: str | Path, *, label_delay_days: int = F.LABEL_DELAY_DAYS):
        self.directory = Path(directory)
        self.staging = self.directory / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self.delay_s = int(label_delay_days) * F.DAY_S
        self._repaired: set[str] = set()

    def _staging_file(self, name: str) -> Path:
        return self.staging / f"{name}.jsonl"

    def _repair(self, path: Path) -> None:
        """Cut an unfinished last line (a crash mid-append) before appending after it."""
        if path.name in self._repaired:
            return
        self._repaired.add(path.name)
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, rows: list[tuple[int, dict]]) -> None:
        """(event time, raw transaction fields) of decided transactions, durable when this returns."""
        by_hour: dict[str, list[str]] = {}
        for event_time, raw in rows:
            record = {c: raw.get(c, "") for c in LANDED_COLUMNS if c != F.LABEL}
            by_hour.setdefault(hour_name(event_time), []).append(json.dumps(record, ensure_ascii=False) + "\n")
        for name, lines in by_hour.items():
            path = self._staging_file(name)
            self._repair(path)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())

    def pending_hours(self) -> list[str]:
        return sorted(p.stem for p in self.staging.glob("*.jsonl"))

    def ready(self, watermark: int | None) -> list[str]:
        """Staged hours whose end is at least the label delay before `watermark` (the newest event time)."""
        if watermark is None:
            return []
        return [name for name in self.pending_hours() if hour_start(name) + HOUR_S + self.delay_s <= watermark]

    def finalize(self, name: str, labels: dict[str, int]) -> Path:
        """Write the hour out, labelled (`labels`: transaction id -> 0/1 posted so far; others 0)."""
        staging, target = self._staging_file(name), landed_file(self.directory, name)
        if not target.exists():
            seen: set[str] = set()
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(LANDED_COLUMNS)
            with open(staging, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # an unfinished line: its message was not acknowledged
                    tid = str(record.get(F.TRANSACTION_ID, "")).strip()
                    if not tid or tid in seen:
                        continue
                    seen.add(tid)
                    record[F.LABEL] = int(labels.get(tid, 0))
                    writer.writerow([record.get(c, "") for c in LANDED_COLUMNS])
            atomic.write_text(target, out.getvalue())
        staging.unlink(missing_ok=True)
        return target

    def finalize_ready(self, watermark: int | None, labels: dict[str, int]) -> list[Path]:
        return [self.finalize(name, labels) for name in self.ready(watermark)]


def labels_by_transaction(labels: list[dict]) -> dict[str, int]:
    """The decision store's posted labels (oldest first) -> transaction id -> the latest label."""
    out = {}
    for label in labels:
        try:
            out[str(label["transaction_id"])] = int(label[F.LABEL])
        except (KeyError, TypeError, ValueError):
            continue
    return out


__all__ = ["LANDED_COLUMNS", "Landing", "hour_name", "labels_by_transaction", "landed_file"]
