"""Behavioural features: one definition, computed on arrays, used offline (Beam, pipeline scoring) and online
(one transaction at a time, from the decision service's per-entity snapshots).

Every feature of a transaction at time t is computed from the entity's events with time < t strictly:
events at the same second, and anything later, are invisible. The definition works on columns: a `history`
of events (any number of entities, each entity's events ordered by time) and `targets`, the transactions to
compute features for. Offline, targets and history are the same events (each row sees its entity's earlier
rows); online, the history is the entity's snapshot and the target one new transaction. Both call the same
functions below (`user_features`, `device_features`, `restaurant_features`), so offline and online agree
exactly (tests/unit/test_behaviour.py holds them equal on generated streams and on random events).

Features (names in fraud.features):
- per user (the card): count, amount sum and mean over 1h/1d/7d/30d; amount / 30-day mean; seconds since
  the previous transaction (capped at 30 days); distinct cities and restaurants in the last day; travel
  speed implied by the previous transaction's city (km/h); whether the device is new for the user; the card's
  own fraud rate over [t - (n + delay), t - delay] days for n = 7 and 30 (as the restaurant's, below);
- per device: distinct users over 30 days, transactions over 1 day;
- per restaurant (the terminal): transactions over 1/7/30 days, and the fraud rate over
  [t - (n + delay), t - delay] days for n = 1, 7 and 30: fraud labels arrive late, so only labels at least
  `delay` days old are used (delay = 7 by default); the short windows catch a compromise of a few days that the
  30-day rate dilutes;
- user_anomaly_score, an explainable sum of four signals against the user's own history:
    amount z-score   (log amount vs the user's 30-day mean/std of log amounts, clipped to [0, 10],
                      0 with fewer than 3 prior amounts)
  + new device      (1 if the device was never used by the user before)
  + new city        (1 if the user never paid in this city before)
  + unusual hour    (1 if the user never paid within +-1 hour of this Lima hour before, given >= 3 prior).
Amounts are in PEN (USD converted); a missing amount counts as a transaction but not in sums/means. Sums are
exact: amounts are added in fixed point (1e-4 PEN) and log-amounts too (1e-9), as integers, so a window's
sum does not depend on how many other entities share the arrays (offline) or not (online).

A missing id ("", e.g. no device) is no entity: such a row shares no history with any other and gets that
entity's cold-start values (counts 0, device new only when there is a device, fraud rate 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraud import features as F
from fraud import timeutil
from fraud.errors import DuplicateTransaction, OutOfOrderEvent

DAY = F.DAY_S
MAX_GAP_S = 30 * DAY
UNKNOWN_LABEL = F.UNKNOWN_LABEL
_AMOUNT_SCALE = 10_000  # amounts are summed in fixed point, in 1/10,000 PEN
_LOG_SCALE = 1e9  # log-amounts and their squares are summed in fixed point


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


class Columns:
    """Events as arrays, one per Event field: ids and cities as object arrays of str, time and label int64,
    the amount float64 (NaN when missing). A field may be left out (None) where no feature reads it
    (`select`, FIELDS_READ): less to move between the Beam job's stages."""

    FIELDS = tuple(Event.__dataclass_fields__)
    _DTYPES = {"time": np.int64, "amount_pen": np.float64, "label": np.int64}

    def __init__(self, **columns):
        n = None
        for name in self.FIELDS:
            values = columns.get(name)
            if values is None:
                setattr(self, name, None)
                continue
            dtype = self._DTYPES.get(name, object)
            array = np.asarray(values, dtype=dtype) if not (isinstance(values, np.ndarray) and values.dtype == dtype) \
                else values
            if n is not None and len(array) != n:
                raise ValueError(f"column {name!r} has {len(array)} values, not {n}")
            n = len(array)
            setattr(self, name, array)
        self.n = n or 0

    def __len__(self):
        return self.n

    def __reduce__(self):
        """Pickled with the text columns as Arrow string arrays (a few buffers) instead of one object per value:
        the Beam job moves Columns between its stages."""
        import pyarrow as pa

        state = {name: (pa.array(values, pa.string()) if values is not None and values.dtype == object else values)
                 for name in self.FIELDS if (values := getattr(self, name)) is not None}
        return _unpickle_columns, (state,)

    @classmethod
    def of_events(cls, events) -> "Columns":
        events = list(events)
        return cls(**{name: [getattr(e, name) for e in events] for name in cls.FIELDS})

    @classmethod
    def empty(cls) -> "Columns":
        return cls(**{name: [] for name in cls.FIELDS})

    @classmethod
    def concat(cls, parts) -> "Columns":
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(**{name: None if any(getattr(p, name) is None for p in parts)
                      else np.concatenate([getattr(p, name) for p in parts]) for name in cls.FIELDS})

    def take(self, index) -> "Columns":
        return Columns(**{name: None if getattr(self, name) is None else getattr(self, name)[index]
                          for name in self.FIELDS})

    def select(self, fields) -> "Columns":
        """These fields only (the others None)."""
        return Columns(**{name: getattr(self, name) for name in fields})

    def events(self) -> list[Event]:
        return [Event(*row) for row in zip(*(getattr(self, name).tolist() for name in self.FIELDS))]


def _unpickle_columns(state: dict) -> Columns:
    import pyarrow as pa

    return Columns(**{name: values.to_numpy(zero_copy_only=False).astype(object) if isinstance(values, pa.Array)
                      else values for name, values in state.items()})


# ------------------------------------------------------------------------------------------------
# Array helpers: entities as integer codes, each entity's events contiguous and in time order.
# ------------------------------------------------------------------------------------------------
_SMALL = 512  # below this many values, plain numpy/Python beats pandas' hash tables (the online path: one entity)


def _factorize(values):
    """(int64 codes, the distinct values): values[i] == uniques[codes[i]]."""
    values = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if len(values) <= _SMALL:
        table: dict = {}
        codes = np.fromiter((table.setdefault(v, len(table)) for v in values.tolist()), np.int64, len(values))
        return codes, np.array(list(table), dtype=values.dtype if values.dtype != object else object)
    import pandas as pd

    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64), np.asarray(uniques)


def _lookup(uniques, values):
    """Per value: its index in `uniques` (distinct values), -1 if absent."""
    values = np.asarray(values, dtype=uniques.dtype if len(uniques) else object)
    if len(values) <= _SMALL and len(uniques) <= _SMALL:
        table = {v: i for i, v in enumerate(uniques.tolist())}
        return np.fromiter((table.get(v, -1) for v in values.tolist()), np.int64, len(values))
    import pandas as pd

    return pd.Index(uniques).get_indexer(values).astype(np.int64)


def _codes(*arrays):
    """Integer codes of the values of several arrays, consistent across them (one table)."""
    joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    codes, uniques = _factorize(joined)
    out, start = [], 0
    for a in arrays:
        out.append(codes[start:start + len(a)].astype(np.int64))
        start += len(a)
    return out, len(uniques)


_BEFORE_ALL = -(1 << 62)


class _Frame:
    """The history of one entity kind as sorted arrays, and the targets located in it.

    History rows without the entity's id are left out (a missing id is no entity). The history is ordered by
    (entity, time, transaction id); `comp` = entity * span + (time - base) is non-decreasing, so a window
    [t - w, t) of a target's entity is a range of history indices found by binary search."""

    def __init__(self, history: Columns, targets: Columns, id_field: str, max_lookback: int):
        h_ids, t_ids = getattr(history, id_field), getattr(targets, id_field)
        keep = np.flatnonzero(h_ids != "")
        codes, self._ids = _factorize(np.concatenate([h_ids[keep], t_ids]))
        h_key, t_key = codes[:len(keep)], codes[len(keep):]
        times = history.time[keep]
        order = np.lexsort((times, h_key))
        order = _ties_by_id(order, h_key, times, history.transaction_id[keep])
        self.rows = keep[order]  # history row of each sorted position
        self.key = h_key[order]
        self.time = times[order]
        all_times = np.concatenate([self.time, targets.time])
        self.base = int(all_times.min()) - max_lookback - 1 if len(all_times) else 0
        self.span = (int(all_times.max()) - self.base + 1) if len(all_times) else 1
        self.comp = self.key * self.span + (self.time - self.base)
        t_key = np.where(t_ids == "", -1, t_key)  # no entity: no history, cold start
        self.t_key, self.t_time = t_key, targets.time
        # Add a time to get a comp; a target without an entity gets a value below every comp: index 0, no history.
        self.t_comp0 = np.where(t_key >= 0, t_key * self.span - self.base, _BEFORE_ALL)
        self.start = self.index(0, absolute=True)
        self.n = self.index(0)  # history events strictly before each target
        self.prior = self.n - self.start

    def key_of(self, ids):
        """The entity codes of other ids (-1 for an id neither in the history nor among the targets)."""
        return _lookup(self._ids, np.asarray(ids, dtype=object))

    def index(self, offset, side="left", absolute=False):
        """Per target: the first history index at or after (target time - offset) (side="right": after), within
        the target's entity; absolute=True: the entity's first index."""
        when = self.base if absolute else self.t_time - offset
        return np.searchsorted(self.comp, self.t_comp0 + when, side=side)

    def window_starts(self, widths):
        """index(width) for several widths at once: (len(widths), targets), never before the entity's start."""
        when = self.t_time[None, :] - np.asarray(widths, np.int64)[:, None]
        found = np.searchsorted(self.comp, (self.t_comp0[None, :] + when).ravel()).reshape(when.shape)
        return np.maximum(found, self.start[None, :])

    def window_counts(self, width):
        return self.n - np.maximum(self.index(width), self.start)


def _ties_by_id(order, key, times, ids):
    """`order` (by entity and time) with events of one entity at the same second ordered by transaction id."""
    k, t = key[order], times[order]
    tie = np.flatnonzero((k[1:] == k[:-1]) & (t[1:] == t[:-1]))
    if not len(tie):
        return order
    order = order.copy()
    breaks = np.flatnonzero(np.diff(tie) != 1)
    run_start = tie[np.r_[0, breaks + 1]]
    run_end = tie[np.r_[breaks, len(tie) - 1]] + 2  # a run of ties at p, p+1, ... covers order[p:end]
    for a, b in zip(run_start.tolist(), run_end.tolist()):
        segment = order[a:b]
        order[a:b] = segment[np.argsort(ids[segment].astype(str), kind="stable")]
    return order


def _prefix(values):
    """[0, v0, v0+v1, ...] as int64 (sums of window [lo, hi) = p[hi] - p[lo], exact)."""
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def _distinct_in_windows(values, lo, hi):
    """Per target i: the number of distinct values >= 0 among values[lo[i]:hi[i]] (negative: no value).

    Targets come in any order; they are walked by (lo, hi), both of which then move forward only, keeping a
    count per value of the current window: O(history + targets) for windows that slide forward in time."""
    out = np.zeros(len(lo), dtype=np.float64)
    if not len(lo) or not len(values):
        return out
    order = np.lexsort((hi, lo))
    vals = values.tolist()
    counts = [0] * (max(vals) + 1 if vals else 1)
    cur_lo = cur_hi = 0
    distinct = 0
    result = [0] * len(lo)
    for i, a, b in zip(order.tolist(), lo[order].tolist(), hi[order].tolist()):
        if a >= cur_hi or b < cur_hi:  # no overlap with the current window (or it shrinks): start afresh
            for j in range(cur_lo, cur_hi):
                if vals[j] >= 0:
                    counts[vals[j]] = 0
            cur_lo = cur_hi = a
            distinct = 0
        for j in range(cur_hi, b):
            v = vals[j]
            if v >= 0:
                if counts[v] == 0:
                    distinct += 1
                counts[v] += 1
        for j in range(cur_lo, a):
            v = vals[j]
            if v >= 0:
                counts[v] -= 1
                if counts[v] == 0:
                    distinct -= 1
        cur_lo, cur_hi = a, b
        result[i] = distinct
    out[:] = result
    return out


_CITY_INDEX = {name: i for i, name in enumerate(F.CITY_COORDS)}
_KM_TABLE = np.array([[F.haversine_km(*a, *b) for b in F.CITY_COORDS.values()] for a in F.CITY_COORDS.values()])


def _city_index(cities):
    """Index of each city in fraud.features.CITY_COORDS, -1 for a city without coordinates."""
    codes, uniques = _factorize(cities)
    lookup = np.array([_CITY_INDEX.get(u, -1) for u in uniques.tolist()], dtype=np.int64)
    return lookup[codes] if len(codes) else codes


def _km_between(city_a, city_b):
    """km between the cities of two arrays (fraud.features.haversine_km), NaN where one has no coordinates."""
    a, b = _city_index(city_a), _city_index(city_b)
    out = np.full(len(a), np.nan)
    ok = (a >= 0) & (b >= 0)
    out[ok] = _KM_TABLE[a[ok], b[ok]]
    return out


class _FirstSeen:
    """The first time each (entity, value) pair was seen: new device / new city / unusual hour. Small tables (the
    online path: one card) are a dict; large ones sorted arrays searched in bulk."""

    def __init__(self, keys, values, times):
        self.table = None
        if len(keys) <= _SMALL:
            table: dict = {}
            for pair, time in zip(zip(keys.tolist(), np.asarray(values).tolist()), np.asarray(times).tolist()):
                if pair not in table or time < table[pair]:
                    table[pair] = time
            self.table = table
            return
        codes, self.values = _factorize(values)
        width = len(self.values) + 1
        pairs = keys * width + codes
        order = np.lexsort((times, pairs))
        pairs, times = pairs[order], times[order]
        first = np.r_[True, pairs[1:] != pairs[:-1]]
        self.pairs, self.times, self.width = pairs[first], times[first], width

    def time_of(self, keys, values):
        """Per (entity, value): the first time seen, np.inf if never (or no entity)."""
        if self.table is not None:
            get, inf = self.table.get, np.inf
            return np.array([get(pair, inf) for pair in zip(keys.tolist(), np.asarray(values).tolist())], np.float64)
        out = np.full(len(keys), np.inf)
        if not len(keys):
            return out
        codes = _lookup(self.values, values)
        pairs = keys * self.width + codes
        at = np.minimum(np.searchsorted(self.pairs, pairs), len(self.pairs) - 1)
        found = (self.pairs[at] == pairs) & (keys >= 0) & (codes >= 0)
        out[found] = self.times[at[found]]
        return out


def _lima_hours(times):
    return np.asarray(timeutil.lima_hour(np.asarray(times, np.int64)), np.int64)


def _fixed(values, scale):
    return np.rint(values * scale).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# The definition: features of `targets` from `history`, per entity kind, as (targets x features) arrays.
# ------------------------------------------------------------------------------------------------
def _delayed_fraud_rates(fr: _Frame, labels, windows_days, label_delay_days: int) -> list:
    """Per window of n days: the fraud rate among the entity's labelled events in [t - (n + delay) days,
    t - delay days], the labels known at t (0 where none is labelled). `labels`: the history's, in fr order."""
    p_fraud = _prefix((labels == 1).astype(np.int64))
    p_labelled = _prefix((labels != UNKNOWN_LABEL).astype(np.int64))
    hi = np.minimum(fr.index(label_delay_days * DAY, side="right"), fr.n)
    rates = []
    for lo in fr.window_starts([(days + label_delay_days) * DAY for days in windows_days]):
        top = np.maximum(hi, lo)
        labelled = p_labelled[top] - p_labelled[lo]
        rates.append(np.divide(p_fraud[top] - p_fraud[lo], labelled, out=np.zeros(len(fr.t_time)),
                               where=labelled > 0))
    return rates


def user_reach_s(label_delay_days: int = F.LABEL_DELAY_DAYS) -> int:
    """How far back a user's windowed features look: the widest amount window or the delayed fraud window."""
    return max(max(w for _, w in F.BEHAVIOUR_WINDOWS), (F.USER_FRAUD_WINDOW_DAYS + label_delay_days) * DAY)


def user_features(history: Columns, targets: Columns, *, first_seen: dict | None = None,
                  label_delay_days: int = F.LABEL_DELAY_DAYS) -> np.ndarray:
    """F.USER_BEHAVIOUR_FEATURES per target. `first_seen` (online): {"device" | "city" | "hour": (user ids,
    values, first times)} of the whole history, when `history` holds only its recent events; offline it is
    derived from `history`."""
    fr = _Frame(history, targets, F.USER_ID, user_reach_s(label_delay_days))
    rows, n = fr.rows, fr.n
    t, amount_t = targets.time, targets.amount_pen
    amount = np.clip(history.amount_pen[rows], -1e13, 1e13)  # a nonsense amount must not overflow the sums
    known = ~np.isnan(amount)
    zeroed = np.where(known, amount, 0.0)
    logs = np.log1p(np.maximum(zeroed, 0.0))
    p_sum, p_known = _prefix(_fixed(zeroed, _AMOUNT_SCALE)), _prefix(known.astype(np.int64))
    p_log, p_sq = _prefix(_fixed(logs, _LOG_SCALE)), _prefix(_fixed(logs * logs, _LOG_SCALE))
    out = np.zeros((len(targets), len(F.USER_BEHAVIOUR_FEATURES)))
    col = {name: i for i, name in enumerate(F.USER_BEHAVIOUR_FEATURES)}
    lo_of = dict(zip((w for _, w in F.BEHAVIOUR_WINDOWS), fr.window_starts([w for _, w in F.BEHAVIOUR_WINDOWS])))
    for name, width in F.BEHAVIOUR_WINDOWS:
        lo = lo_of[width]
        count, k = n - lo, p_known[n] - p_known[lo]
        total = (p_sum[n] - p_sum[lo]) / _AMOUNT_SCALE
        out[:, col[f"user_txn_count_{name}"]] = count
        out[:, col[f"user_amount_sum_{name}"]] = total
        out[:, col[f"user_amount_mean_{name}"]] = np.divide(total, k, out=np.zeros(len(k)), where=k > 0)
    mean_30d = out[:, col["user_amount_mean_30d"]]
    amount_known = ~np.isnan(amount_t)
    ratio = np.divide(amount_t, mean_30d, out=np.ones(len(t)), where=amount_known & (mean_30d > 0))
    out[:, col["user_amount_ratio_30d"]] = ratio
    has_prev = fr.prior > 0
    prev = np.where(has_prev, n - 1, 0)
    if len(rows):
        prev_time, prev_city = fr.time[prev], history.city[rows][prev]
    else:
        prev_time, prev_city = np.zeros(len(t), np.int64), np.full(len(t), "", dtype=object)
    gap = t - prev_time
    out[:, col["user_secs_since_prev"]] = np.where(has_prev, np.minimum(gap, MAX_GAP_S), MAX_GAP_S)
    (cities, restaurants), _ = _codes(history.city[rows], history.restaurant_id[rows])
    cities[history.city[rows] == ""] = -1
    restaurants[history.restaurant_id[rows] == ""] = -1
    lo_day = lo_of[DAY]
    out[:, col["user_distinct_cities_1d"]] = _distinct_in_windows(cities, lo_day, n)
    out[:, col["user_distinct_restaurants_1d"]] = _distinct_in_windows(restaurants, lo_day, n)
    km = _km_between(prev_city, targets.city)
    moving = has_prev & ~np.isnan(km)
    hours = np.maximum(gap / 3600.0, 1.0 / 60.0)
    out[:, col["user_travel_speed_kmh"]] = np.divide(km, hours, out=np.zeros(len(t)), where=moving)

    if first_seen is None:
        h_devices, h_cities, h_times = history.device_id[rows], history.city[rows], fr.time
        tables = {
            "device": _FirstSeen(fr.key[h_devices != ""], h_devices[h_devices != ""], h_times[h_devices != ""]),
            "city": _FirstSeen(fr.key[h_cities != ""], h_cities[h_cities != ""], h_times[h_cities != ""]),
            "hour": _FirstSeen(fr.key, _lima_hours(h_times), h_times)}
    else:
        tables = {kind: _FirstSeen(fr.key_of(ids), values, np.asarray(times, np.int64))
                  for kind, (ids, values, times) in first_seen.items()}
    new_device = (targets.device_id != "") & ~(tables["device"].time_of(fr.t_key, targets.device_id) < t)
    new_city = (targets.city != "") & ~(tables["city"].time_of(fr.t_key, targets.city) < t)
    hour_t = _lima_hours(t)
    seen_near = np.zeros(len(t), bool)
    for d in (-1, 0, 1):
        seen_near |= tables["hour"].time_of(fr.t_key, (hour_t + d) % 24) < t
    unusual = (fr.prior >= 3) & ~seen_near
    out[:, col["user_device_is_new"]] = new_device

    # Anomaly score: each term is readable on its own (see module docstring).
    lo30 = lo_of[30 * DAY]
    k30 = p_known[n] - p_known[lo30]
    scored = amount_known & (k30 >= 3)
    safe_k = np.maximum(k30, 1)
    mean = (p_log[n] - p_log[lo30]) / _LOG_SCALE / safe_k
    var = np.maximum((p_sq[n] - p_sq[lo30]) / _LOG_SCALE / safe_k - mean * mean, 0.0)
    log_t = np.log1p(np.maximum(np.where(amount_known, amount_t, 0.0), 0.0))
    z = np.where(scored, np.clip((log_t - mean) / np.maximum(np.sqrt(var), 0.5), 0.0, 10.0), 0.0)
    out[:, col["user_anomaly_score"]] = z + new_device + new_city + unusual
    rates = _delayed_fraud_rates(fr, history.label[rows], [d for _, d in F.USER_FRAUD_WINDOWS], label_delay_days)
    for name, rate in zip(F.USER_FRAUD_RATES, rates):
        out[:, col[name]] = rate
    return out


def device_features(history: Columns, targets: Columns) -> np.ndarray:
    """F.DEVICE_BEHAVIOUR_FEATURES per target (a target without a device: zeros)."""
    fr = _Frame(history, targets, F.DEVICE_ID, 30 * DAY)
    (users,), _ = _codes(history.user_id[fr.rows])
    lo30 = np.maximum(fr.index(30 * DAY), fr.start)
    return np.stack([_distinct_in_windows(users, lo30, fr.n), fr.window_counts(DAY).astype(np.float64)], axis=1)


def restaurant_features(history: Columns, targets: Columns, *,
                        label_delay_days: int = F.LABEL_DELAY_DAYS) -> np.ndarray:
    """F.RESTAURANT_BEHAVIOUR_FEATURES per target (a target without a restaurant: zeros)."""
    reaches = [(days + label_delay_days) * DAY for _, days in F.RESTAURANT_FRAUD_WINDOWS]
    fr = _Frame(history, targets, F.RESTAURANT_ID, max(max(reaches), max(w for _, w in F.RESTAURANT_WINDOWS)))
    counts = list((fr.n - fr.window_starts([w for _, w in F.RESTAURANT_WINDOWS])).astype(np.float64))
    rates = _delayed_fraud_rates(fr, history.label[fr.rows], [d for _, d in F.RESTAURANT_FRAUD_WINDOWS],
                                 label_delay_days)
    return np.stack(counts + rates, axis=1)


# What each kind's features read of the history (and of the targets, a subset of it).
FIELDS_READ = {
    "user": ("transaction_id", "time", "user_id", "amount_pen", "city", "restaurant_id", "device_id", "label"),
    "device": ("transaction_id", "time", "user_id", "device_id"),
    "restaurant": ("transaction_id", "time", "restaurant_id", "label"),
}

# The entities, in the order their features are joined into an example: (kind, feature names).
ENTITIES = (("user", F.USER_BEHAVIOUR_FEATURES), ("device", F.DEVICE_BEHAVIOUR_FEATURES),
            ("restaurant", F.RESTAURANT_BEHAVIOUR_FEATURES))


def features_of(kind: str, history: Columns, targets: Columns, *,
                label_delay_days: int = F.LABEL_DELAY_DAYS) -> np.ndarray:
    """(targets x that kind's features) from the history, as defined above."""
    if kind == "user":
        return user_features(history, targets, label_delay_days=label_delay_days)
    if kind == "device":
        return device_features(history, targets)
    return restaurant_features(history, targets, label_delay_days=label_delay_days)


def lookback_s(kind: str, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> int | None:
    """How far back an entity's features look (seconds), or None when unbounded: a user's "new device / city /
    hour" flags look at the whole history. Events older than this never change a feature."""
    if kind == "device":
        return 30 * DAY
    if kind == "restaurant":
        widest = max(width for _, width in F.RESTAURANT_WINDOWS)
        return max(widest, (F.RESTAURANT_FRAUD_WINDOW_DAYS + label_delay_days) * DAY)
    return None


def entity_ids(e: Event) -> dict[str, str]:
    """kind -> id of the entities an event belongs to; a missing id ("", e.g. no device) is no entity."""
    return {kind: key for kind, key in (("user", e.user_id), ("device", e.device_id),
                                        ("restaurant", e.restaurant_id)) if key}


def compute_columns(columns: Columns, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> np.ndarray:
    """Every behavioural feature (F.BEHAVIOUR_FEATURES order) of every row, each row seeing the earlier rows of
    its entities: the same computation as the Beam component (components/behaviour.py), in one process."""
    return np.concatenate([features_of(kind, columns, columns, label_delay_days=label_delay_days)
                           for kind, _ in ENTITIES], axis=1)


def compute_offline(events, *, label_delay_days: int = F.LABEL_DELAY_DAYS) -> dict[str, dict[str, float]]:
    """compute_columns as {transaction id: {feature: value}} (for tests and small data)."""
    columns = Columns.of_events(events)
    values = compute_columns(columns, label_delay_days=label_delay_days).tolist()
    return {tid: dict(zip(F.BEHAVIOUR_FEATURES, row)) for tid, row in zip(columns.transaction_id.tolist(), values)}


# ------------------------------------------------------------------------------------------------
# Online, in memory: every entity's whole history (tests and replays; the decision service keeps bounded
# snapshots instead, fraud.online).
# ------------------------------------------------------------------------------------------------
class OnlineFeatureState:
    """Keeps each entity's history; `score_and_update(e)` returns e's features, then records e.

    Events must arrive in non-decreasing time order (a live stream): an older event raises
    OutOfOrderEvent and changes nothing. A repeated transaction id raises DuplicateTransaction.
    Unknown users, devices and restaurants start from an empty history (cold start: counts 0,
    device new, amount ratio 1).
    """

    def __init__(self, *, label_delay_days: int = F.LABEL_DELAY_DAYS):
        self.history: dict[tuple[str, str], list[Event]] = {}
        self.seen_ids: set[str] = set()
        self.watermark: int | None = None
        self.label_delay_days = label_delay_days

    def features(self, e: Event) -> dict[str, float]:
        target = Columns.of_events([e])
        ids = entity_ids(e)
        values = []
        for kind, _ in ENTITIES:
            history = Columns.of_events(self.history.get((kind, ids.get(kind, "")), []))
            values.extend(features_of(kind, history, target, label_delay_days=self.label_delay_days)[0].tolist())
        return dict(zip(F.BEHAVIOUR_FEATURES, values))

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
        for kind, key in entity_ids(e).items():
            self.history.setdefault((kind, key), []).append(e)

    def score_and_update(self, e: Event) -> dict[str, float]:
        self._check_order(e)
        out = self.features(e)
        self.update(e)
        return out


# ------------------------------------------------------------------------------------------------
# From the standardised frame (fraud.ingest) to events.
# ------------------------------------------------------------------------------------------------
def amount_pen(amount, currency):
    """Amounts in PEN: USD converted at fraud.features.USD_TO_PEN (scalars or arrays)."""
    if isinstance(currency, str):
        return amount * F.USD_TO_PEN if currency == "USD" else amount
    return np.where(np.asarray(currency) == "USD", np.asarray(amount, np.float64) * F.USD_TO_PEN,
                    np.asarray(amount, np.float64))


def event_of(row: dict) -> Event:
    """The Event of one standardised row (fraud.ingest.standardise_record), as columns_of_frame makes it."""
    return Event(transaction_id=row[F.TRANSACTION_ID], time=int(row[F.EVENT_TIME]), user_id=row[F.USER_ID],
                 amount_pen=amount_pen(float(row[F.AMOUNT]), row[F.CURRENCY]), city=row[F.CITY],
                 restaurant_id=row[F.RESTAURANT_ID], device_id=row[F.DEVICE_ID],
                 label=int(row.get(F.LABEL, UNKNOWN_LABEL)))


def columns_of_frame(frame) -> Columns:
    """The events of a standardised frame as columns (no label column: every label unknown)."""
    labels = frame[F.LABEL].to_numpy(np.int64) if F.LABEL in frame.columns else np.full(len(frame), UNKNOWN_LABEL)
    text = {name: frame[name].to_numpy(object) for name in (F.TRANSACTION_ID, F.USER_ID, F.CITY, F.RESTAURANT_ID,
                                                             F.DEVICE_ID)}
    return Columns(transaction_id=text[F.TRANSACTION_ID], time=frame[F.EVENT_TIME].to_numpy(np.int64),
                   user_id=text[F.USER_ID], amount_pen=amount_pen(frame[F.AMOUNT].to_numpy(np.float64),
                                                                  frame[F.CURRENCY].to_numpy(object)),
                   city=text[F.CITY], restaurant_id=text[F.RESTAURANT_ID], device_id=text[F.DEVICE_ID], label=labels)


def events_from_frame(frame) -> list[Event]:
    return columns_of_frame(frame).events()


def add_behaviour_columns(frame, *, label_delay_days: int = F.LABEL_DELAY_DAYS):
    """Return a copy of a standardised frame with every behavioural feature column added."""
    values = compute_columns(columns_of_frame(frame), label_delay_days=label_delay_days)
    out = frame.copy()
    for i, name in enumerate(F.BEHAVIOUR_FEATURES):
        out[name] = values[:, i]
    return out
