"""Behavioural features: one definition, used offline (Beam, per entity) and online (one event at a time).

Every feature of a transaction at time t is computed from the entity's events with time < t strictly:
events at the same second, and anything later, are invisible. The offline path groups events by entity,
sorts them by time and walks them through the same History objects the online state keeps, so the two
paths share every line of feature code.

Features (names in fraud.features):
- per user (the card): count, amount sum and mean over 1h/1d/7d/30d; amount / 30-day mean; seconds since
  the previous transaction (capped at 30 days); distinct cities and restaurants in the last day; travel
  speed implied by the previous transaction's city (km/h); whether the device is new for the user;
- per device: distinct users over 30 days, transactions over 1 day;
- per restaurant (the terminal): transactions over 1/7/30 days, and the fraud rate over
  [t - (n + delay), t - delay] days: fraud labels arrive late, so only labels at least `delay` days old
  are used (n = 30, delay = 7 by default);
- user_anomaly_score, an explainable sum of four signals against the user's own history:
    amount z-score   (log amount vs the user's 30-day mean/std of log amounts, clipped to [0, 10],
                      0 with fewer than 3 prior amounts)
  + new device      (1 if the device was never used by the user before)
  + new city        (1 if the user never paid in this city before)
  + unusual hour    (1 if the user never paid within +-1 hour of this Lima hour before, given >= 3 prior).
Amounts are in PEN (USD converted); a missing amount counts as a transaction but not in sums/means.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

from fraud import features as F
from fraud import timeutil
from fraud.errors import DuplicateTransaction, OutOfOrderEvent

DAY = F.DAY_S
MAX_GAP_S = 30 * DAY
UNKNOWN_LABEL = F.UNKNOWN_LABEL


@dataclass(frozen=True)
class Event:
    transaction_id: str
    time: int  # UTC epoch seconds
    user_id: str
    amount_pen: float  # NaN when missing
    city: str = ""
    restaurant_id: str = ""
    device_id: str = ""
    label: int = UNKNOWN_LABEL  # -1 when not known (scoring, live traffic)

    @property
    def lima_hour(self) -> int:
        return timeutil.lima_hour(self.time)


def _lookup_km(city_a: str, city_b: str) -> float | None:
    a, b = F.CITY_COORDS.get(city_a), F.CITY_COORDS.get(city_b)
    if a is None or b is None:
        return None
    return F.haversine_km(*a, *b)


class _Series:
    """Times in arrival order (non-decreasing) with prefix sums for O(log n) window statistics."""

    def __init__(self):
        self.times: list[int] = []
        self.sum: list[float] = [0.0]  # prefix sums of amounts (NaN as 0)
        self.count: list[int] = [0]  # prefix counts of known amounts
        self.log_sum: list[float] = [0.0]
        self.log_sq: list[float] = [0.0]

    def append(self, time: int, amount: float):
        known = not math.isnan(amount)
        log_amount = math.log1p(max(amount, 0.0)) if known else 0.0
        self.times.append(time)
        self.sum.append(self.sum[-1] + (amount if known else 0.0))
        self.count.append(self.count[-1] + (1 if known else 0))
        self.log_sum.append(self.log_sum[-1] + log_amount)
        self.log_sq.append(self.log_sq[-1] + log_amount * log_amount)

    def cutoff(self, t: int) -> int:
        """Number of events strictly before t."""
        return bisect_left(self.times, t)

    def start(self, t: int) -> int:
        return bisect_left(self.times, t)


@dataclass
class UserHistory:
    series: _Series = field(default_factory=_Series)
    cities: list[str] = field(default_factory=list)
    restaurants: list[str] = field(default_factory=list)
    first_device: dict = field(default_factory=dict)  # device -> first time seen
    first_city: dict = field(default_factory=dict)
    first_hour: dict = field(default_factory=dict)  # Lima hour -> first time seen

    def append(self, e: Event):
        self.series.append(e.time, e.amount_pen)
        self.cities.append(e.city)
        self.restaurants.append(e.restaurant_id)
        for table, key in ((self.first_device, e.device_id), (self.first_city, e.city),
                           (self.first_hour, e.lima_hour)):
            if key != "" and key not in table:
                table[key] = e.time


def _seen_before(table: dict, key, t: int) -> bool:
    return key in table and table[key] < t


def user_features(h: UserHistory, e: Event) -> dict[str, float]:
    s, t = h.series, e.time
    n = s.cutoff(t)
    out: dict[str, float] = {}
    for name, width in F.BEHAVIOUR_WINDOWS:
        lo = s.start(t - width)
        count, known = n - lo, s.count[n] - s.count[lo]
        total = s.sum[n] - s.sum[lo]
        out[f"user_txn_count_{name}"] = float(count)
        out[f"user_amount_sum_{name}"] = total
        out[f"user_amount_mean_{name}"] = total / known if known else 0.0
    mean_30d = out["user_amount_mean_30d"]
    amount_known = not math.isnan(e.amount_pen)
    out["user_amount_ratio_30d"] = e.amount_pen / mean_30d if amount_known and mean_30d > 0 else 1.0
    out["user_secs_since_prev"] = float(min(t - s.times[n - 1], MAX_GAP_S)) if n else float(MAX_GAP_S)
    lo_day = s.start(t - DAY)
    out["user_distinct_cities_1d"] = float(len({c for c in h.cities[lo_day:n] if c}))
    out["user_distinct_restaurants_1d"] = float(len({r for r in h.restaurants[lo_day:n] if r}))
    speed = 0.0
    if n:
        km = _lookup_km(h.cities[n - 1], e.city)
        if km is not None:
            speed = km / max((t - s.times[n - 1]) / 3600.0, 1.0 / 60.0)
    out["user_travel_speed_kmh"] = speed
    new_device = 1.0 if e.device_id and not _seen_before(h.first_device, e.device_id, t) else 0.0
    out["user_device_is_new"] = new_device

    # Anomaly score: each term is readable on its own (see module docstring).
    lo_30 = s.start(t - 30 * DAY)
    known_30 = s.count[n] - s.count[lo_30]
    z = 0.0
    if amount_known and known_30 >= 3:
        mean = (s.log_sum[n] - s.log_sum[lo_30]) / known_30
        var = max((s.log_sq[n] - s.log_sq[lo_30]) / known_30 - mean * mean, 0.0)
        z = min(max((math.log1p(max(e.amount_pen, 0.0)) - mean) / max(math.sqrt(var), 0.5), 0.0), 10.0)
    new_city = 1.0 if e.city and not _seen_before(h.first_city, e.city, t) else 0.0
    unusual_hour = 0.0
    if n >= 3:
        near = [(e.lima_hour + d) % 24 for d in (-1, 0, 1)]
        unusual_hour = 0.0 if any(_seen_before(h.first_hour, hour, t) for hour in near) else 1.0
    out["user_anomaly_score"] = z + new_device + new_city + unusual_hour
    return out


@dataclass
class DeviceHistory:
    times: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    # A sliding window [lo, hi) of users with their counts, so that walking a busy device in time order
    # counts distinct users in O(1) per event instead of building a set of the whole 30 days each time.
    _window: dict = field(default_factory=dict, repr=False, compare=False)
    _lo: int = field(default=0, repr=False, compare=False)
    _hi: int = field(default=0, repr=False, compare=False)

    def append(self, e: Event):
        self.times.append(e.time)
        self.users.append(e.user_id)

    def distinct_users(self, lo: int, hi: int) -> int:
        """len(set(users[lo:hi])): moved forward from the last window when both ends move forward (a walk in time
        order), else counted afresh."""
        if lo < self._lo or hi < self._hi or lo > self._hi:
            self._window, self._lo, self._hi = {}, lo, lo
        window, users = self._window, self.users
        for i in range(self._hi, hi):
            window[users[i]] = window.get(users[i], 0) + 1
        for i in range(self._lo, lo):
            left = window[users[i]] - 1
            if left:
                window[users[i]] = left
            else:
                del window[users[i]]
        self._lo, self._hi = lo, hi
        return len(window)


def device_features(h: DeviceHistory, e: Event) -> dict[str, float]:
    if not e.device_id:
        return {"device_distinct_users_30d": 0.0, "device_txn_count_1d": 0.0}
    n = bisect_left(h.times, e.time)
    lo_30 = bisect_left(h.times, e.time - 30 * DAY)
    lo_1 = bisect_left(h.times, e.time - DAY)
    return {"device_distinct_users_30d": float(h.distinct_users(lo_30, n)),
            "device_txn_count_1d": float(n - lo_1)}


@dataclass
class RestaurantHistory:
    times: list[int] = field(default_factory=list)
    frauds: list[int] = field(default_factory=lambda: [0])  # prefix sums over labelled events
    labelled: list[int] = field(default_factory=lambda: [0])

    def append(self, e: Event):
        self.times.append(e.time)
        known = e.label != UNKNOWN_LABEL
        self.frauds.append(self.frauds[-1] + (1 if known and e.label == 1 else 0))
        self.labelled.append(self.labelled[-1] + (1 if known else 0))

    @classmethod
    def of(cls, times: list[int], labels: list[int]) -> "RestaurantHistory":
        """The history `append` builds from events with these times and labels, in one pass (the online state
        rebuilds a busy restaurant's hundreds of events on every decision)."""
        return cls(times=list(times), frauds=[0, *accumulate(1 if v == 1 else 0 for v in labels)],
                   labelled=[0, *accumulate(0 if v == UNKNOWN_LABEL else 1 for v in labels)])


def restaurant_features(h: RestaurantHistory, e: Event, *, label_delay_days: int = F.LABEL_DELAY_DAYS,
                        window_days: int = F.RESTAURANT_FRAUD_WINDOW_DAYS) -> dict[str, float]:
    out = {f"restaurant_txn_count_{name}": 0.0 for name, _ in F.RESTAURANT_WINDOWS}
    out["restaurant_fraud_rate_delayed"] = 0.0
    if not e.restaurant_id:
        return out
    t = e.time
    n = bisect_left(h.times, t)
    for name, width in F.RESTAURANT_WINDOWS:
        out[f"restaurant_txn_count_{name}"] = float(n - bisect_left(h.times, t - width))
    # Labels known at t: events in [t - (window + delay) days, t - delay days].
    lo = bisect_left(h.times, t - (window_days + label_delay_days) * DAY)
    hi = min(bisect_right(h.times, t - label_delay_days * DAY), n)
    labelled = h.labelled[hi] - h.labelled[lo] if hi > lo else 0
    if labelled:
        out["restaurant_fraud_rate_delayed"] = (h.frauds[hi] - h.frauds[lo]) / labelled
    return out


# ------------------------------------------------------------------------------------------------
# Offline: one entity's events at a time (the Beam component groups by entity and calls these).
# ------------------------------------------------------------------------------------------------
def _ordered(events):
    return sorted(events, key=lambda e: (e.time, e.transaction_id))


def user_features_for_entity(events) -> list[tuple[str, dict]]:
    h, out = UserHistory(), []
    for e in _ordered(events):
        out.append((e.transaction_id, user_features(h, e)))
        h.append(e)
    return out


def device_features_for_entity(events) -> list[tuple[str, dict]]:
    h, out = DeviceHistory(), []
    for e in _ordered(events):
        out.append((e.transaction_id, device_features(h, e)))
        h.append(e)
    return out


def restaurant_features_for_entity(events, **kwargs) -> list[tuple[str, dict]]:
    h, out = RestaurantHistory(), []
    for e in _ordered(events):
        out.append((e.transaction_id, restaurant_features(h, e, **kwargs)))
        h.append(e)
    return out


# The entities, in the order their features are joined into an example: (kind, feature names).
ENTITIES = (("user", F.USER_BEHAVIOUR_FEATURES), ("device", F.DEVICE_BEHAVIOUR_FEATURES),
            ("restaurant", F.RESTAURANT_BEHAVIOUR_FEATURES))


def features_for_entity(kind: str, events, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> list[tuple[str, dict]]:
    """One entity's events -> (transaction id, that kind's features) per event, walked in time order."""
    if kind == "user":
        return user_features_for_entity(events)
    if kind == "device":
        return device_features_for_entity(events)
    return restaurant_features_for_entity(events, label_delay_days=label_delay_days)


def lookback_s(kind: str, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> int | None:
    """How far back an entity's features look (seconds), or None when unbounded: a user's "new device / city /
    hour" flags look at the whole history. Events older than this never change a feature."""
    if kind == "device":
        return 30 * DAY
    if kind == "restaurant":
        widest = max(width for _, width in F.RESTAURANT_WINDOWS)
        return max(widest, (F.RESTAURANT_FRAUD_WINDOW_DAYS + label_delay_days) * DAY)
    return None


def time_blocks(time: int, block_s: int, lookback: int) -> tuple[int, list[int]]:
    """(the time block an event is a target in, the later blocks it is history for).

    Targets at t see the entity's events in [t - lookback, t): an event at `time` matters to targets in
    (time, time + lookback], so to the blocks that interval meets. With block_s >= lookback that is at most one
    block: a hot entity is split into blocks at the cost of at most doubling its events."""
    own = time // block_s
    return own, list(range(own + 1, (time + lookback) // block_s + 1))


def entity_ids(e: Event) -> dict[str, str]:
    """kind -> id of the entities an event belongs to; a missing id ("", e.g. no device) is no entity."""
    return {kind: key for kind, key in (("user", e.user_id), ("device", e.device_id),
                                        ("restaurant", e.restaurant_id)) if key}


def compute_offline(events) -> dict[str, dict[str, float]]:
    """All behavioural features for a collection of events, grouped per entity in memory.

    The same computation as the Beam component (components/behaviour.py), for `fraudctl score` and tests.
    """
    events = list(events)
    groups: dict[tuple[str, str], list[Event]] = {}
    result: dict[str, dict[str, float]] = {e.transaction_id: {} for e in events}
    for e in events:
        ids = entity_ids(e)
        for kind, _ in ENTITIES:
            if kind in ids:
                groups.setdefault((kind, ids[kind]), []).append(e)
            else:  # a missing id is no entity: cold-start features, no shared history
                for tid, feats in features_for_entity(kind, [e]):
                    result[tid].update(feats)
    for (kind, _), group in groups.items():
        for tid, feats in features_for_entity(kind, group):
            result[tid].update(feats)
    return result


# ------------------------------------------------------------------------------------------------
# Online: an incremental state, one transaction at a time (for the live scoring service).
# ------------------------------------------------------------------------------------------------
class OnlineFeatureState:
    """Keeps each entity's history; `score_and_update(e)` returns e's features, then records e.

    Events must arrive in non-decreasing time order (a live stream): an older event raises
    OutOfOrderEvent and changes nothing. A repeated transaction id raises DuplicateTransaction.
    Unknown users, devices and restaurants start from an empty history (cold start: counts 0,
    device new, amount ratio 1). Memory grows with history; prune with `forget_before(t)`.
    """

    def __init__(self, *, label_delay_days: int = F.LABEL_DELAY_DAYS):
        self.users: dict[str, UserHistory] = {}
        self.devices: dict[str, DeviceHistory] = {}
        self.restaurants: dict[str, RestaurantHistory] = {}
        self.seen_ids: set[str] = set()
        self.watermark: int | None = None
        self.label_delay_days = label_delay_days

    def features(self, e: Event) -> dict[str, float]:
        out = user_features(self.users.get(e.user_id) or UserHistory(), e)
        out.update(device_features(self.devices.get(e.device_id) or DeviceHistory(), e))
        out.update(restaurant_features(self.restaurants.get(e.restaurant_id) or RestaurantHistory(), e,
                                       label_delay_days=self.label_delay_days))
        return out

    def _check_order(self, e: Event) -> None:
        if self.watermark is not None and e.time < self.watermark:
            raise OutOfOrderEvent(f"transaction {e.transaction_id} at {e.time} is older than the state's "
                                  f"latest event ({self.watermark}); replay streams in time order")

    def update(self, e: Event) -> None:
        self._check_order(e)
        if e.transaction_id in self.seen_ids:
            raise DuplicateTransaction(f"transaction {e.transaction_id} was already recorded")
        self.seen_ids.add(e.transaction_id)
        self.watermark = e.time
        self.users.setdefault(e.user_id, UserHistory()).append(e)
        self.devices.setdefault(e.device_id, DeviceHistory()).append(e)
        self.restaurants.setdefault(e.restaurant_id, RestaurantHistory()).append(e)

    def score_and_update(self, e: Event) -> dict[str, float]:
        self._check_order(e)
        out = self.features(e)
        self.update(e)
        return out


# ------------------------------------------------------------------------------------------------
# From the standardised frame (fraud.ingest) to events.
# ------------------------------------------------------------------------------------------------
def amount_pen(amount: float, currency: str) -> float:
    return amount * F.USD_TO_PEN if currency == "USD" else amount


def event_of(row: dict) -> Event:
    """The Event of one standardised row (fraud.ingest.standardise_record), as events_from_frame makes it."""
    return Event(transaction_id=row[F.TRANSACTION_ID], time=int(row[F.EVENT_TIME]), user_id=row[F.USER_ID],
                 amount_pen=amount_pen(float(row[F.AMOUNT]), row[F.CURRENCY]), city=row[F.CITY],
                 restaurant_id=row[F.RESTAURANT_ID], device_id=row[F.DEVICE_ID],
                 label=int(row.get(F.LABEL, UNKNOWN_LABEL)))


def events_from_frame(frame) -> list[Event]:
    labels = frame[F.LABEL].tolist() if F.LABEL in frame.columns else [UNKNOWN_LABEL] * len(frame)
    return [
        Event(transaction_id=tid, time=int(t), user_id=u, amount_pen=amount_pen(float(a), c), city=city,
              restaurant_id=r, device_id=d, label=int(label))
        for tid, t, u, a, c, city, r, d, label in zip(
            frame[F.TRANSACTION_ID], frame[F.EVENT_TIME], frame[F.USER_ID], frame[F.AMOUNT], frame[F.CURRENCY],
            frame[F.CITY], frame[F.RESTAURANT_ID], frame[F.DEVICE_ID], labels)
    ]


def add_behaviour_columns(frame):
    """Return a copy of a standardised frame with every behavioural feature column added."""
    feats = compute_offline(events_from_frame(frame))
    out = frame.copy()
    for name in F.BEHAVIOUR_FEATURES:
        out[name] = [feats[tid][name] for tid in frame[F.TRANSACTION_ID]]
    return out
