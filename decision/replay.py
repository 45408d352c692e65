"""Replay the last day(s) of a data set through the live decision path (what `make demo` ends with).

The days before are loaded into the state first (their snapshots folded from the history, labels included:
in the past, those labels have been reported), then every transaction of the replayed days goes through
DecisionService.decide, i.e. standardisation, online features, the gRPC model call and the policy, in time
order. Their labels are not given to the service; they only score the outcome afterwards.
"""
from __future__ import annotations

from collections import Counter
from datetime import date
from dataclasses import dataclass, field
from pathlib import Path

from fraud import behaviour as B
from fraud import features as F
from fraud import ingest, online, timeutil

from decision.service import DecisionOptions, DecisionService
from decision.state import MemoryStore

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class ReplaySummary:
    history_rows: int
    replayed: int
    days: list = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    frauds: int = 0
    frauds_flagged: int = 0
    flagged: int = 0
    degraded: int = 0
    examples: list = field(default_factory=list)
    alerts: int = 0
    seconds: float = 0.0


def fold_history(events: list[B.Event]) -> dict[tuple[str, str], dict]:
    """(kind, id) -> snapshot after all `events` (in time order), as if each had been appended online."""
    snapshots: dict[tuple[str, str], dict] = {}
    for e in sorted(events, key=lambda e: (e.time, e.transaction_id)):
        for kind, key in online.entity_ids(e).items():
            current = snapshots.get((kind, key)) or online.empty(kind)
            snapshots[(kind, key)] = online.append(kind, current, e)
    return snapshots


async def replay(data_dir: Path, options: DecisionOptions, *, days: int = 1, progress=None) -> ReplaySummary:
    import time

    raw = ingest.read_csv_dir(data_dir)
    standard = ingest.standardise(raw, require_label=True).frame
    last_day = int(timeutil.lima_day(int(standard[F.EVENT_TIME].max())))
    start = timeutil.from_lima((last_day - days + 1) * F.DAY_S)  # 00:00 Lima of the first replayed day
    history = standard[standard[F.EVENT_TIME] < start]
    replayed_ids = set(standard.loc[standard[F.EVENT_TIME] >= start, F.TRANSACTION_ID])
    store = MemoryStore()
    store.load(fold_history(B.events_from_frame(history)))
    labels = dict(zip(standard[F.TRANSACTION_ID], standard[F.LABEL]))
    rows = ingest.raw_in_time_order(raw[raw[F.TRANSACTION_ID].astype(str).str.strip().isin(replayed_ids)],
                                    standard)
    rows = rows.drop(columns=[c for c in (F.LABEL, F.FRAUD_SCENARIO) if c in rows.columns])
    summary = ReplaySummary(history_rows=len(history), replayed=len(rows),
                            days=[str(date.fromordinal(EPOCH_ORDINAL + last_day - d)) for d in reversed(range(days))])
    service = DecisionService(options, store=store)
    began = time.perf_counter()
    try:
        for i, tx in enumerate(rows.to_dict("records")):
            answer = await service.decide(tx)
            fraud = int(labels[answer["transaction_id"]]) == 1
            flagged = answer["decision"] != "approve"
            summary.outcomes[answer["decision"]] += 1
            summary.frauds += fraud
            summary.flagged += flagged
            summary.frauds_flagged += fraud and flagged
            summary.degraded += bool(answer["degraded"])
            if flagged and len(summary.examples) < 5 and answer["reasons"]:
                summary.examples.append((answer, fraud))
            if progress and (i + 1) % 200 == 0:
                progress(f"  {i + 1}/{len(rows)} transactions decided")
        summary.alerts = len(await store.alerts(10**9))
    finally:
        await service.close()
    summary.seconds = time.perf_counter() - began
    return summary


def format_summary(s: ReplaySummary) -> str:
    lines = [f"Live replay of {', '.join(s.days)}: {s.replayed} transactions through the decision service "
             f"(state warmed with {s.history_rows} earlier ones), {s.seconds:.1f} s "
             f"({1000 * s.seconds / max(s.replayed, 1):.1f} ms per decision)",
             "  decisions: " + ", ".join(f"{k} {s.outcomes.get(k, 0)}" for k in ("approve", "review", "decline")),
             f"  alerts raised: {s.alerts}; degraded answers: {s.degraded}",
             f"  fraud that day: {s.frauds}, of which flagged (review or decline): {s.frauds_flagged}"
             + (f" ({100 * s.frauds_flagged / s.frauds:.0f}%)" if s.frauds else ""),
             f"  flagged that were fraud: {s.frauds_flagged} of {s.flagged}"
             + (f" ({100 * s.frauds_flagged / s.flagged:.0f}%)" if s.flagged else "")]
    for answer, fraud in s.examples:
        lines.append(f"  e.g. {answer['transaction_id']}: {answer['decision']} (score {answer['score']}, "
                     f"{'fraud' if fraud else 'legitimate'}): {'; '.join(answer['reasons'][:3])}")
    return "\n".join(lines)
