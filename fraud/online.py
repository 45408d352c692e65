"""Online state for the behavioural features: each card's, device's and restaurant's history as a small,
bounded, JSON-able snapshot, turned back into history columns for fraud.behaviour's feature functions, so the
online features are computed by the same lines of code as the offline ones (no second implementation).

What a snapshot keeps, and why it is enough for every feature of fraud.behaviour (parity is tested):
- user (card): events of the last 30 + 7 days (the delayed fraud-rate window; the amount windows need 30),
  always the newest event (seconds since the previous transaction, travel speed), the number of older events
  dropped (the anomaly score's "at least 3 prior transactions" counts all of them), the first time each device,
  city and Lima hour was seen (new device / new city / unusual hour look at the whole history; these tables
  grow with distinct values only), and the labels known so far of the kept events;
- device: (time, user) of the last 30 days;
- restaurant: (time, transaction id) of the last 30 + 7 days (the delayed fraud-rate window) and the labels
  known so far (chargebacks and confirmations reported through the labels API).
Events older than these windows, relative to the entity's newest event, are evicted on every update.

Events must arrive in time order per entity; an event older than the entity's newest is "late": it is scored on
the current state but not inserted (`is_late`).
"""
from __future__ import annotations

import math

import numpy as np

from fraud import behaviour as B
from fraud import features as F

USER_KEEP_S = B.user_reach_s()  # 30 + 7 days
DEVICE_KEEP_S = 30 * F.DAY_S  # device_distinct_users_30d
RESTAURANT_KEEP_S = (F.RESTAURANT_FRAUD_WINDOW_DAYS + F.LABEL_DELAY_DAYS) * F.DAY_S
LABELLED_KINDS = ("user", "restaurant")  # snapshots that keep labels (their delayed fraud rates)
_PRIOR_EVENTS_THAT_MATTER = 3  # user_features' "n >= 3": older events count only up to this

entity_ids = B.entity_ids  # kind -> id; a missing id is no entity (as offline)


def empty(kind: str) -> dict:
    if kind == "user":
        return {"events": [], "dropped": 0, "first_device": {}, "first_city": {}, "first_hour": {}, "labels": {}}
    if kind == "device":
        return {"events": []}
    return {"events": [], "labels": {}}


def newest_time(snapshot: dict) -> int | None:
    events = snapshot["events"]
    return events[-1][0] if events else None


def is_late(snapshots: dict[str, dict], e: B.Event) -> bool:
    """True if the event is older than the newest event of one of its entities."""
    return any((t := newest_time(s)) is not None and e.time < t for s in snapshots.values())


# ---------------------------------------------------------------------------------------------------------------
# snapshot -> history columns (fraud.behaviour.Columns), then the same feature functions as offline
# ---------------------------------------------------------------------------------------------------------------
_DEFAULTS = {"transaction_id": "", "time": 0, "user_id": "", "amount_pen": math.nan, "city": "",
             "restaurant_id": "", "device_id": "", "label": B.UNKNOWN_LABEL}


def _columns(n: int, **given) -> B.Columns:
    """Columns of n events: the given fields (lists of n values), every other field at its default."""
    return B.Columns(**{name: given[name] if name in given else [_DEFAULTS[name]] * n for name in B.Columns.FIELDS})


def user_history(snapshot: dict, user_id: str) -> tuple[B.Columns, dict]:
    """(the user's kept events, the first-seen tables of its whole history) for fraud.behaviour.user_features."""
    # Dropped events stand in as placeholders at time 0, outside every window: they only count as "prior".
    placeholders = min(snapshot["dropped"], _PRIOR_EVENTS_THAT_MATTER)
    events, labels = snapshot["events"], snapshot.get("labels", {})  # snapshots written before labels: none
    n = placeholders + len(events)
    columns = _columns(
        n, user_id=[user_id] * n, time=[0] * placeholders + [ev[0] for ev in events],
        transaction_id=[""] * placeholders + [ev[1] for ev in events],
        amount_pen=[math.nan] * placeholders + [math.nan if ev[2] is None else ev[2] for ev in events],
        city=[""] * placeholders + [ev[3] for ev in events],
        restaurant_id=[""] * placeholders + [ev[4] for ev in events],
        device_id=[""] * placeholders + [ev[5] for ev in events],
        label=[B.UNKNOWN_LABEL] * placeholders + [labels.get(ev[1], B.UNKNOWN_LABEL) for ev in events])
    hours = {int(k): v for k, v in snapshot["first_hour"].items()}
    first_seen = {kind: ([user_id] * len(table), list(table), list(table.values()))
                  for kind, table in (("device", snapshot["first_device"]), ("city", snapshot["first_city"]),
                                      ("hour", hours))}
    return columns, first_seen


def device_history(snapshot: dict, device_id: str) -> B.Columns:
    events = snapshot["events"]
    return _columns(len(events), device_id=[device_id] * len(events), time=[t for t, _ in events],
                    user_id=[u for _, u in events])


def restaurant_history(snapshot: dict, restaurant_id: str) -> B.Columns:
    events, labels = snapshot["events"], snapshot["labels"]
    return _columns(len(events), restaurant_id=[restaurant_id] * len(events), time=[t for t, _ in events],
                    transaction_id=[tid for _, tid in events],
                    label=[labels.get(tid, B.UNKNOWN_LABEL) for _, tid in events])


def features(snapshots: dict[str, dict], e: B.Event, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> dict:
    """Every behavioural feature of `e` from its entities' snapshots (kind -> snapshot; missing kinds: an empty
    history): features_many of one event."""
    state = {(kind, key): snapshots.get(kind) for kind, key in entity_ids(e).items()}
    return features_many(state, [e], label_delay_days=label_delay_days)[0]


def features_many(state: dict, events: list, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> list[dict]:
    """Every behavioural feature of each of `events`, as if each were scored and then appended in turn:
    `state` holds their entities' snapshots before the first ((kind, id) -> snapshot, or None for a new entity),
    and no event may be late (`is_late`) when its turn comes.

    One call of each of fraud.behaviour's feature functions for all of them, as offline: the history is the
    snapshots' events plus the events themselves, and each event sees only what is strictly before it in time.
    That is exactly what it sees one at a time: an entity's later events, not being late, are no older than it;
    what `append` evicts meanwhile is outside every window of a later event; and the anomaly score's count of
    prior events only asks whether there are 3, which the placeholders of dropped events still answer."""
    if not events:
        return []
    batch = B.Columns.of_events(events)
    users, devices, restaurants = [], [], []
    first_seen = {"device": ([], [], []), "city": ([], [], []), "hour": ([], [], [])}
    for (kind, key), snapshot in state.items():
        if snapshot is None:
            continue
        if kind == "user":
            columns, tables = user_history(snapshot, key)
            users.append(columns)
            for name, (ids, values, times) in tables.items():
                first_seen[name][0].extend(ids)
                first_seen[name][1].extend(values)
                first_seen[name][2].extend(times)
        elif kind == "device":
            devices.append(device_history(snapshot, key))
        else:
            restaurants.append(restaurant_history(snapshot, key))
    hours = B._lima_hours(batch.time).tolist()
    for e, hour in zip(events, hours):  # what `append` adds to the first-seen tables
        for name, value in (("device", e.device_id), ("city", e.city), ("hour", hour)):
            if value != "":
                first_seen[name][0].append(e.user_id)
                first_seen[name][1].append(value)
                first_seen[name][2].append(e.time)
    values = [
        B.user_features(B.Columns.concat(users + [batch]), batch, first_seen=first_seen,
                        label_delay_days=label_delay_days),
        B.device_features(B.Columns.concat(devices + [batch]), batch),
        B.restaurant_features(B.Columns.concat(restaurants + [batch]), batch, label_delay_days=label_delay_days)]
    return [dict(zip(F.BEHAVIOUR_FEATURES, row)) for row in np.concatenate(values, axis=1).tolist()]


# ---------------------------------------------------------------------------------------------------------------
# Updates: append an event (then evict), record a label
# ---------------------------------------------------------------------------------------------------------------
def append(kind: str, snapshot: dict, e: B.Event) -> dict:
    """A new snapshot with `e` appended and what no window needs any more evicted (the input is not changed)."""
    s = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in snapshot.items()}
    if kind == "user":
        amount = None if math.isnan(e.amount_pen) else e.amount_pen
        s["events"].append([e.time, e.transaction_id, amount, e.city, e.restaurant_id, e.device_id])
        for table, key in (("first_device", e.device_id), ("first_city", e.city), ("first_hour", str(e.lima_hour))):
            if key != "" and key not in s[table]:
                s[table][key] = e.time
        keep_from = e.time - USER_KEEP_S
        old = 0
        while old < len(s["events"]) - 1 and s["events"][old][0] < keep_from:  # the newest event always stays
            old += 1
        s["dropped"] += old
        labels = s.setdefault("labels", {})
        if e.label != B.UNKNOWN_LABEL:
            labels[e.transaction_id] = e.label
        if old and labels:
            gone = {ev[1] for ev in s["events"][:old]}
            s["labels"] = {tid: v for tid, v in labels.items() if tid not in gone}
        del s["events"][:old]
    elif kind == "device":
        s["events"].append([e.time, e.user_id])
        s["events"] = [ev for ev in s["events"] if ev[0] >= e.time - DEVICE_KEEP_S]
    else:
        s["events"].append([e.time, e.transaction_id])
        if e.label != B.UNKNOWN_LABEL:
            s["labels"][e.transaction_id] = e.label
        keep_from = e.time - RESTAURANT_KEEP_S
        kept = [ev for ev in s["events"] if ev[0] >= keep_from]
        if len(kept) != len(s["events"]):
            ids = {tid for _, tid in kept}
            s["labels"] = {tid: v for tid, v in s["labels"].items() if tid in ids}
        s["events"] = kept
    return s


def with_label(snapshot: dict, transaction_id: str, label: int) -> tuple[dict, bool]:
    """A user or restaurant snapshot with a transaction's label recorded; False if that transaction is no
    longer kept (older than the fraud-rate windows: the label cannot change any future feature)."""
    if not any(ev[1] == transaction_id for ev in snapshot["events"]):  # events are [time, transaction id, ...]
        return snapshot, False
    s = dict(snapshot)
    s["labels"] = {**snapshot.get("labels", {}), transaction_id: int(label)}
    return s, True
