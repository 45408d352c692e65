"""The online state (fraud.online): bounded snapshots that give exactly the offline behavioural features."""
from __future__ import annotations

import json
import math

import pytest

from fraud import behaviour as B
from fraud import features as F
from fraud import ingest, online
from tests.helpers import generate


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    data = generate(tmp_path_factory.mktemp("online") / "tx", days=50, users=700, seed=11)
    frame = ingest.standardise(ingest.read_csv_dir(data), require_label=True).frame
    return B.events_from_frame(frame)


def _replay(events):
    """Every event through snapshots (JSON round trip each time, as a store keeps them), in time order."""
    snapshots: dict[tuple[str, str], str] = {}
    out = {}
    for e in sorted(events, key=lambda e: (e.time, e.transaction_id)):
        ids = online.entity_ids(e)
        current = {kind: json.loads(snapshots[(kind, key)]) for kind, key in ids.items() if (kind, key) in snapshots}
        assert not online.is_late(current, e)
        out[e.transaction_id] = online.features(current, e)
        for kind, key in ids.items():
            snapshots[(kind, key)] = json.dumps(online.append(kind, current.get(kind) or online.empty(kind), e))
    return out, snapshots


def test_online_features_equal_the_offline_ones_for_every_transaction(events):
    offline = B.compute_offline(events)
    replayed, _ = _replay(events)
    assert len(replayed) == len(events) > 5000
    for rate in F.RESTAURANT_FRAUD_RATES + F.USER_FRAUD_RATES:
        frauds_seen = sum(1 for f in offline.values() if f[rate] > 0)
        # A card's fraud rarely goes on for a week after it is reported, so few rows see a card's rate.
        assert frauds_seen > (10 if rate in F.USER_FRAUD_RATES else 50), f"the data must exercise {rate}"
    mismatches = [(tid, name, offline[tid][name], got[name]) for tid, got in replayed.items()
                  for name in F.BEHAVIOUR_FEATURES
                  if not math.isclose(got[name], offline[tid][name], rel_tol=1e-9, abs_tol=1e-9)]
    assert not mismatches, f"{len(mismatches)} differences, e.g. {mismatches[:5]}"


def test_snapshots_keep_only_what_the_windows_need(events):
    _, snapshots = _replay(events)
    newest = max(e.time for e in events)
    for (kind, _), text in snapshots.items():
        s = json.loads(text)
        times = [ev[0] for ev in s["events"]]
        keep = {"user": online.USER_KEEP_S, "device": online.DEVICE_KEEP_S,
                "restaurant": online.RESTAURANT_KEEP_S}[kind]
        last = times[-1]
        assert all(t >= last - keep for t in times[:-1]), f"{kind} kept events older than its window"
        if kind in online.LABELLED_KINDS:
            kept = {ev[1] for ev in s["events"]}
            assert set(s["labels"]) <= kept
    users = [json.loads(t) for (k, _), t in snapshots.items() if k == "user"]
    assert sum(u["dropped"] for u in users) > 0, "50 days of data must evict something"
    assert newest - min(min(ev[0] for ev in u["events"]) for u in users) <= 50 * F.DAY_S


def test_a_late_event_is_detected_and_missing_ids_are_no_entity():
    e1 = B.Event("a", 1000, "u1", 50.0, "Lima", "r1", "")
    e0 = B.Event("b", 900, "u1", 50.0, "Lima", "r1", "d1")
    assert online.entity_ids(e1) == {"user": "u1", "restaurant": "r1"}
    state = {"user": online.append("user", online.empty("user"), e1)}
    assert online.is_late(state, e0) and not online.is_late(state, e1)


def test_a_label_changes_the_restaurant_rate_once_older_than_the_delay():
    day = F.DAY_S
    sold = B.Event("t1", 0, "u1", 100.0, "Lima", "r1", "")
    snap = online.append("restaurant", online.empty("restaurant"), sold)
    later = B.Event("t2", (F.LABEL_DELAY_DAYS + 1) * day, "u2", 100.0, "Lima", "r1", "")
    assert online.features({"restaurant": snap}, later)["restaurant_fraud_rate_delayed_30d"] == 0.0
    labelled, applied = online.with_label(snap, "t1", 1)
    assert applied and snap["labels"] == {}  # the input snapshot is not changed
    assert online.features({"restaurant": labelled}, later)["restaurant_fraud_rate_delayed_30d"] == 1.0
    too_soon = B.Event("t3", 3 * day, "u3", 100.0, "Lima", "r1", "")
    assert online.features({"restaurant": labelled}, too_soon)["restaurant_fraud_rate_delayed_30d"] == 0.0
    assert online.with_label(snap, "unknown", 1) == (snap, False)


def test_a_label_changes_the_card_rate_and_old_snapshots_without_labels_still_load():
    day = F.DAY_S
    paid = B.Event("t1", 0, "u1", 100.0, "Lima", "r1", "")
    snap = online.append("user", online.empty("user"), paid)
    later = B.Event("t2", (F.LABEL_DELAY_DAYS + 1) * day, "u1", 100.0, "Lima", "r2", "")
    assert online.features({"user": snap}, later)[F.user_fraud_rate("30d")] == 0.0
    labelled, applied = online.with_label(snap, "t1", 1)
    assert applied and snap["labels"] == {}
    assert online.features({"user": labelled}, later)[F.user_fraud_rate("30d")] == 1.0
    # A snapshot stored before cards kept labels: no "labels" key; it reads as no labels and takes new ones.
    legacy = {k: v for k, v in snap.items() if k != "labels"}
    assert online.features({"user": legacy}, later)[F.user_fraud_rate("30d")] == 0.0
    assert online.with_label(legacy, "t1", 1)[0]["labels"] == {"t1": 1}
    assert online.append("user", legacy, later)["labels"] == {}


def test_a_batch_is_recorded_as_its_transactions_one_after_the_other(events):
    """DecisionService.record_many (the stream consumer's step 1) leaves exactly the state and the decision
    records that recording the same transactions one at a time leaves, with a transaction repeated inside a
    batch, a late one, and another writer changing a key mid-batch (the batch is computed again)."""
    import asyncio
    import dataclasses

    from decision.service import DecisionOptions, DecisionService
    from decision.state import MemoryStore

    ordered = sorted(events, key=lambda e: (e.time, e.transaction_id))[:900]
    late = dataclasses.replace(ordered[400], transaction_id="late-one", time=ordered[400].time - 3600)
    stream = ordered[:450] + [ordered[430], late] + ordered[450:]  # a repeat (same id) and a late event

    class Interrupted(MemoryStore):
        """Another writer bumps a key the batch read, once, between its read and its commit."""
        reads = 0

        async def read_many(self, entities, transaction_ids):
            snap = await super().read_many(entities, transaction_ids)
            self.reads += 1
            if self.reads == 3:
                key = next(iter(snap.keys.values()))
                self._versions[key] = self._versions.get(key, 0) + 1
            return snap

    async def run():
        options = DecisionOptions(serving="127.0.0.1:9")  # step 1 never calls the model
        one = DecisionService(options, store=MemoryStore())
        singles = [await one.record({}, e) for e in stream]
        many = DecisionService(options, store=Interrupted())
        seen = []
        batched = []
        for start in range(0, len(stream), 64):
            batched += await many.record_many([({}, e) for e in stream[start:start + 64]],
                                              observe=lambda row, e, features: seen.append(e.transaction_id))
        return one.store, singles, many.store, batched, seen

    one, singles, many, batched, seen = asyncio.run(run())
    assert many.reads > len(stream) // 64 + 1  # the interrupted batch was read again
    assert batched == singles
    assert many._data == one._data
    assert [r["late"] for r, e in zip(batched, stream) if e.transaction_id == "late-one"] == [True]
    # observe sees each transaction once, the first time it is recorded (not the repeat)
    assert sorted(seen) == sorted({e.transaction_id for e in stream})
    assert len(seen) == len(stream) - 1
