"""Online state for the behavioural features: each card's, device's and restaurant's history as a small,
bounded, JSON-able snapshot, turned back into the History objects of fraud.behaviour, so the online features
are computed by the same lines of code as the offline ones (no second implementation).

What a snapshot keeps, and why it is enough for every feature of fraud.behaviour (parity is tested):
- user (card): events of the last 30 days (the longest user window), always the newest event (seconds since
  the previous transaction, travel speed), the number of older events dropped (the anomaly score's "at least 3
  prior transactions" counts all of them), and the first time each device, city and Lima hour was seen (new
  device / new city / unusual hour look at the whole history; these tables grow with distinct values only);
- device: (time, user) of the last 30 days;
- restaurant: (time, transaction id) of the last 30 + 7 days (the delayed fraud-rate window) and the labels
  known so far (chargebacks and confirmations reported through the labels API).
Events older than these windows, relative to the entity's newest event, are evicted on every update.

Events must arrive in time order per entity; an event older than the entity's newest is "late": it is scored on
the current state but not inserted (`is_late`).
"""
from __future__ import annotations

import math

from fraud import behaviour as B
from fraud import features as F

USER_KEEP_S = max(width for _, width in F.BEHAVIOUR_WINDOWS)  # 30 days
DEVICE_KEEP_S = 30 * F.DAY_S  # device_distinct_users_30d
RESTAURANT_KEEP_S = (F.RESTAURANT_FRAUD_WINDOW_DAYS + F.LABEL_DELAY_DAYS) * F.DAY_S
_PRIOR_EVENTS_THAT_MATTER = 3  # user_features' "n >= 3": older events count only up to this

entity_ids = B.entity_ids  # kind -> id; a missing id is no entity (as offline)


def empty(kind: str) -> dict:
    if kind == "user":
        return {"events": [], "dropped": 0, "first_device": {}, "first_city": {}, "first_hour": {}}
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
# snapshot -> History (fraud.behaviour), then the same feature functions as offline
# ---------------------------------------------------------------------------------------------------------------
def user_history(snapshot: dict) -> B.UserHistory:
    h = B.UserHistory()
    h.first_device.update(snapshot["first_device"])
    h.first_city.update(snapshot["first_city"])
    h.first_hour.update({int(k): v for k, v in snapshot["first_hour"].items()})
    # Dropped events stand in as placeholders at time 0, outside every window: they only count as "prior".
    for _ in range(min(snapshot["dropped"], _PRIOR_EVENTS_THAT_MATTER)):
        h.series.append(0, math.nan)
        h.cities.append("")
        h.restaurants.append("")
    for time, tid, amount, city, restaurant, device in snapshot["events"]:
        h.append(B.Event(tid, time, "", math.nan if amount is None else amount, city, restaurant, device))
    return h


def device_history(snapshot: dict) -> B.DeviceHistory:
    return B.DeviceHistory(times=[t for t, _ in snapshot["events"]], users=[u for _, u in snapshot["events"]])


def restaurant_history(snapshot: dict) -> B.RestaurantHistory:
    labels = snapshot["labels"]
    return B.RestaurantHistory.of([t for t, _ in snapshot["events"]],
                                  [labels.get(tid, B.UNKNOWN_LABEL) for _, tid in snapshot["events"]])


def features(snapshots: dict[str, dict], e: B.Event, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> dict:
    """Every behavioural feature of `e` from its entities' snapshots (missing kinds: an empty history)."""
    out = B.user_features(user_history(snapshots.get("user") or empty("user")), e)
    out.update(B.device_features(device_history(snapshots.get("device") or empty("device")), e))
    out.update(B.restaurant_features(restaurant_history(snapshots.get("restaurant") or empty("restaurant")), e,
                                     label_delay_days=label_delay_days))
    return out


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
    """A restaurant snapshot with a transaction's label recorded; False if that transaction is no longer kept
    (older than the fraud-rate window: the label cannot change any future feature)."""
    if not any(tid == transaction_id for _, tid in snapshot["events"]):
        return snapshot, False
    s = dict(snapshot)
    s["labels"] = {**snapshot["labels"], transaction_id: int(label)}
    return s, True
