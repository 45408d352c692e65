"""Synthetic card transactions at luxury restaurants in Peru, with labelled fraud and deliberate data problems.

(Longer than the project's ~600-line guide on purpose: the world, the legitimate traffic, the five fraud
scenarios and the formatting draw from ONE random stream in a fixed order, which is what makes a seed give
byte-identical files; split across modules, that order would be a contract between them. The module is the
generator and nothing else, and only tests, the demo and `fraudctl generate` import it.)

The generator stands in for the real payment feed so that the whole pipeline (ingestion, validation,
transform, training, evaluation, serving) can be built and tested end to end. Everything is drawn from
one ``numpy.random.default_rng(seed)``, so a given (seed, days, users, start) always yields
byte-identical files.

World
-----
* 40 restaurants ``R001``..``R040``: half in Lima, the rest in Cusco, Arequipa, Trujillo, Chiclayo,
  Piura, Iquitos, Puno, Paracas and Mancora. Each has 1-3 POS terminals (``pos_terminal``) and a
  fixed Peruvian IP address.
* Users ``U00001``..: ~75 % live in Peru (Lima most), ~25 % are tourists from the foreign cities of
  ``features.CITY_COORDS``. Locals visit 0.05-0.25 times a day over the whole period; tourists
  come for one 4-14 day trip (Lima, Cusco, Paracas, Arequipa) and eat out about once a day then.
  Each user owns 1-2 personal devices (ios / android / web) and two IP addresses.
* Card-present payments (``dine_in``, ``tip_adjustment``) are taken on the restaurant's POS terminal;
  ``reservation_deposit`` and ``delivery`` are paid from the user's own phone or browser.
* Times follow Lima lunch (12:30-15:30) and dinner (19:30-23:00) peaks, busier on Friday/Saturday.
  Amounts are in the row's currency: PEN for locals, mostly USD for tourists (USD = PEN / USD_TO_PEN).
  About 0.5 % of bills are legitimate banquets of 3,000-25,000 PEN, a third of them after midnight.

Fraud (``is_fraudulent`` = 1, ~1.2 % of rows; ``fraud_scenario`` names the story, "none" otherwise)
-------------------------------------------------------------------------------------------------
* ``stolen_card``: 1-3 charges, 85 % at 01:00-05:00 Lima, in a city >= 400 km from the holder's home
  (off the tourist route for tourists), on a device the holder never used (a far restaurant's POS
  or a fresh phone/browser), high amounts.
* ``card_testing``: bursts of 3-8 charges of 1-20 PEN seconds apart on one card, mostly
  ``reservation_deposit`` from a ``web`` device and a foreign hosting/VPN IP, at any hour.
* ``account_takeover``: a new device and a new IP, then 1-3 charges (``delivery`` /
  ``reservation_deposit``) within a day, high amounts.
* ``compromised_restaurant``: 1-2 restaurants skim the cards presented during a 1-2 week window.
  The skimming visit stays legitimate (label 0); 3-20 days later the cloned card is charged in
  another city (label 1), mostly at ordinary dinner hours: the weakest single-row signal on purpose.
"High amounts" are 3-10x the holder's usual bill (4-12x for takeovers) for two thirds of the rows and
1.2-3x for the rest (fraudsters who stay under the radar).
Legitimate look-alikes keep the problem honest: banquets (a third after midnight), corporate dinners
at 2.5-7x the usual bill, private-dining deposits and catering deliveries of 800-6,000 PEN, 1-20 PEN
card-verification holds, small flat tips, late dinners and night bookings, tourists far from home.
A gradient-boosted tree on single-row features reaches ROC AUC ~0.99 and average precision ~0.8.

Deliberate data problems (what ingestion must cope with)
--------------------------------------------------------
====================================  ========  ===================================================
problem                               rate      detail
====================================  ========  ===================================================
missing ``amount``                    ~2 %      empty cell
missing ``user_age``                  ~5 %      empty cell
missing ``home_city``                 ~2 %      empty cell
missing ``city``                      ~1 %      empty cell
mixed ``timestamp`` formats           100 %     ISO UTC ``2026-06-01T23:15:07Z`` (~55 %),
                                                ISO Lima offset ``2026-06-01T18:15:07-05:00`` (~20 %),
                                                Lima local naive ``01/06/2026 18:15:07`` =
                                                DD/MM/YYYY HH:MM:SS, UTC-5 (~15 %),
                                                epoch seconds ``1780355707`` (~10 %)
``device_id`` spelling variants       ~10 %     canonical ``DEV-3F9A21C0``; ``dev_3f9a21c0``
                                                (~5 %) and ``dev3f9a21c0`` (~5 %) for the same device
extreme amounts                       ~0.5 %    legitimate banquets, 3,000-25,000 PEN
====================================  ========  ===================================================
Never produced: unparseable timestamps, non-numeric amounts, missing ids or labels (those are bad
input that ingestion must reject, and are tested there).

Files: one CSV per Lima-local calendar month, ``transactions-YYYY-MM.csv``, rows sorted by true time,
``\\n`` line endings, columns in ``OUTPUT_COLUMNS`` order.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fraud import atomic, timeutil
from fraud import features as F
from fraud import synth

# ---------------------------------------------------------------------------------------------
# Public constants
# ---------------------------------------------------------------------------------------------
OUTPUT_COLUMNS = F.CONTRACT_COLUMNS
FILE_PREFIX = "transactions-"

SCENARIO_NONE = "none"
STOLEN_CARD = "stolen_card"
CARD_TESTING = "card_testing"
ACCOUNT_TAKEOVER = "account_takeover"
COMPROMISED_RESTAURANT = "compromised_restaurant"
FRAUD_SCENARIOS = (STOLEN_CARD, CARD_TESTING, ACCOUNT_TAKEOVER, COMPROMISED_RESTAURANT)

DINE_IN, DEPOSIT, DELIVERY, TIP = "dine_in", "reservation_deposit", "delivery", "tip_adjustment"
CREDIT, DEBIT, WALLET, AMEX = "credit_card", "debit_card", "mobile_wallet", "amex"
POS, IOS, ANDROID, WEB = "pos_terminal", "ios", "android", "web"
PEN, USD = "PEN", "USD"

# Data-problem rates (documented in the module docstring; tests check them).
MISSING_AMOUNT_RATE = 0.02
MISSING_AGE_RATE = 0.05
MISSING_HOME_CITY_RATE = 0.02
MISSING_CITY_RATE = 0.01
DEVICE_ID_VARIANT_RATE = 0.10  # split evenly between "dev_<hex>" and "dev<hex>"


_OFFSET_SUFFIX = f"{'-' if F.LIMA_UTC_OFFSET_S < 0 else '+'}{abs(F.LIMA_UTC_OFFSET_HOURS):02d}:00"
TS_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # UTC
TS_ISO_LIMA = "%Y-%m-%dT%H:%M:%S" + _OFFSET_SUFFIX  # Lima wall clock with explicit offset
TS_LIMA_NAIVE = "%d/%m/%Y %H:%M:%S"  # Lima wall clock, no zone: day first!
TS_EPOCH = "epoch_seconds"  # integer seconds since 1970-01-01 UTC, as a string
TIMESTAMP_FORMAT_SHARES = {TS_ISO_UTC: 0.55, TS_ISO_LIMA: 0.20, TS_LIMA_NAIVE: 0.15, TS_EPOCH: 0.10}

MIN_DAYS = synth.MIN_DAYS
MIN_USERS = synth.MIN_USERS

# ---------------------------------------------------------------------------------------------
# Domain knobs (city names are data values, validated against features.CITY_COORDS below)
# ---------------------------------------------------------------------------------------------
RESTAURANTS_PER_CITY = {
    "Lima": 20, "Cusco": 6, "Arequipa": 3, "Trujillo": 2, "Chiclayo": 2, "Piura": 1,
    "Iquitos": 1, "Puno": 1, "Paracas": 2, "Mancora": 2,
}
# Where local (Peruvian) card holders live; affluent diners concentrate in Lima.
LOCAL_HOME_WEIGHTS = {
    "Lima": 0.58, "Arequipa": 0.10, "Trujillo": 0.07, "Cusco": 0.07, "Chiclayo": 0.05, "Piura": 0.05,
    "Iquitos": 0.03, "Puno": 0.02, "Paracas": 0.01, "Mancora": 0.02,
}
TOURIST_HOME_WEIGHTS = {
    "New York": 0.25, "Santiago": 0.18, "Buenos Aires": 0.15, "Sao Paulo": 0.15, "Madrid": 0.15,
    "Bogota": 0.12,
}
TOURIST_DESTINATIONS = {"Lima": 0.45, "Cusco": 0.35, "Paracas": 0.10, "Arequipa": 0.10}
LOCAL_TRAVEL = {  # where locals eat when they are away from home
    "Lima": 0.30, "Cusco": 0.22, "Arequipa": 0.14, "Paracas": 0.10, "Mancora": 0.10, "Trujillo": 0.07,
    "Chiclayo": 0.07,
}
FAR_KM = 400.0  # "far from home" for stolen cards

for _name, _table in (("RESTAURANTS_PER_CITY", RESTAURANTS_PER_CITY), ("LOCAL_HOME_WEIGHTS", LOCAL_HOME_WEIGHTS),
                      ("TOURIST_HOME_WEIGHTS", TOURIST_HOME_WEIGHTS), ("TOURIST_DESTINATIONS", TOURIST_DESTINATIONS),
                      ("LOCAL_TRAVEL", LOCAL_TRAVEL)):
    _unknown = set(_table) - set(F.CITY_COORDS)
    if _unknown:  # a typo here would silently create a city without coordinates
        raise ImportError(f"datagen.{_name} names cities missing from features.CITY_COORDS: {sorted(_unknown)}")

REST_CITIES = tuple(RESTAURANTS_PER_CITY)
OFF_ROUTE_CITIES = tuple(c for c in REST_CITIES if c not in TOURIST_DESTINATIONS)
_DIST_KM = {(a, b): F.haversine_km(*F.CITY_COORDS[a], *F.CITY_COORDS[b]) for a in F.CITY_COORDS for b in F.CITY_COORDS}

# Mon..Sun demand multipliers (mean 1): Friday and Saturday nights are the busiest.
_DOW = np.array([0.75, 0.80, 0.90, 1.00, 1.35, 1.45, 0.75])
DOW_FACTOR = _DOW / _DOW.mean()

LOCAL_PAY = {CREDIT: 0.45, DEBIT: 0.25, WALLET: 0.20, AMEX: 0.10}
TOURIST_PAY = {CREDIT: 0.55, AMEX: 0.30, DEBIT: 0.13, WALLET: 0.02}
THIEF_PAY = {CREDIT: 0.65, AMEX: 0.25, DEBIT: 0.10}  # stolen / tested cards are mostly credit
PERSONAL_DEVICE_TYPES = {IOS: 0.45, ANDROID: 0.40, WEB: 0.15}
OS_BY_TYPE = {
    IOS: {"ios_17": 0.4, "ios_18": 0.6},
    ANDROID: {"android_13": 0.45, "android_14": 0.55},
    WEB: {"web": 1.0},
    POS: {"pos_fw_5.2": 0.7, "pos_fw_4.9": 0.3},
}

# IP ranges as (first, second) octets. Locals and POS terminals sit in Peruvian ISP ranges; tourists
# roam with their home carrier; fraudsters come through hosting / VPN ranges.
PERU_IP = ((190, 232), (190, 236), (190, 42), (181, 65), (181, 176), (200, 48), (200, 121))
HOME_IP = {
    "New York": ((73, 12), (24, 90), (98, 113)), "Santiago": ((152, 172), (186, 10)),
    "Buenos Aires": ((186, 22), (201, 212)), "Sao Paulo": ((177, 33), (189, 44)),
    "Madrid": ((88, 27), (83, 44)), "Bogota": ((181, 49), (191, 95)),
}
FRAUD_IP = ((45, 133), (103, 152), (185, 220), (5, 188), (91, 219))

# Fraud volume as a share of legitimate rows, with the mean rows per incident (sets incident counts).
FRAUD_ROW_SHARE = {STOLEN_CARD: (0.0035, 1.75), CARD_TESTING: (0.0040, 5.5),
                   ACCOUNT_TAKEOVER: (0.0025, 2.0), COMPROMISED_RESTAURANT: (0.0025, 1.5)}

_H = 3600.0
_KEYS = ("t", "amt", "cur", "pay", "ttype", "user", "rest", "dev", "dtype", "os", "ip", "label", "scen")


@dataclass(frozen=True)
class GenerationSummary:
    rows: int
    fraud_rows: int
    fraud_rate: float
    scenarios: dict[str, int]  # fraud scenario -> rows (all four keys, "none" excluded)
    files: list[str]  # absolute paths of the written CSVs, in month order
    first_day: dt.date  # Lima-local date of the earliest transaction
    last_day: dt.date  # Lima-local date of the latest transaction


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _choice(rng: np.random.Generator, weights: dict[str, float], size: int) -> np.ndarray:
    keys = np.array(list(weights), dtype=object)
    p = np.array(list(weights.values()), dtype=float)
    return keys[rng.choice(len(keys), size=size, p=p / p.sum())]


def _choice1(rng: np.random.Generator, weights: dict[str, float]) -> str:
    return str(_choice(rng, weights, 1)[0])


def _ips(rng: np.random.Generator, prefixes: tuple[tuple[int, int], ...], size: int) -> np.ndarray:
    pre = np.array(prefixes)[rng.integers(0, len(prefixes), size)]
    tail = rng.integers(1, 255, (size, 2))
    return np.array([f"{a}.{b}.{c}.{d}" for (a, b), (c, d) in zip(pre.tolist(), tail.tolist())], dtype=object)


class _Devices:
    """Hands out device ids that are unique across the whole data set, so "new device" really is new."""

    def __init__(self, rng: np.random.Generator):
        self._rng, self._used = rng, set()

    def new(self, size: int) -> np.ndarray:
        out: list[str] = []
        while len(out) < size:
            for v in self._rng.integers(0, 2**32, size - len(out)).tolist():
                if v not in self._used:
                    self._used.add(v)
                    out.append(f"DEV-{v:08X}")
        return np.array(out, dtype=object)


# ---------------------------------------------------------------------------------------------
# The world: restaurants and users
# ---------------------------------------------------------------------------------------------
@dataclass
class _World:
    rest_id: np.ndarray
    rest_city: np.ndarray
    rest_pop: np.ndarray  # relative popularity
    rest_price: np.ndarray  # price level multiplier
    rest_ip: np.ndarray
    rest_by_city: dict[str, np.ndarray]
    term_start: np.ndarray  # first terminal index of each restaurant
    term_count: np.ndarray
    term_dev: np.ndarray
    term_os: np.ndarray
    user_id: np.ndarray
    home: np.ndarray
    tourist: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    typical: np.ndarray  # the user's usual bill in PEN (before the restaurant's price level)
    rate: np.ndarray  # visits per day (locals over the period, tourists during the trip)
    regular: np.ndarray
    fav_rest: np.ndarray  # -1 for tourists
    pref_pay: np.ndarray
    usd_pref: np.ndarray
    trip_start: np.ndarray
    trip_len: np.ndarray
    dest: np.ndarray  # (n, 2) tourist itinerary: first and second half of the trip
    n_dev: np.ndarray
    dev_id: np.ndarray  # (n, 2)
    dev_type: np.ndarray  # (n, 2)
    dev_os: np.ndarray  # (n, 2)
    ip: np.ndarray  # (n, 2)


def _os_for(rng: np.random.Generator, dtypes: np.ndarray) -> np.ndarray:
    out = np.empty(len(dtypes), dtype=object)
    for kind, table in OS_BY_TYPE.items():
        m = np.flatnonzero(dtypes == kind)
        if m.size:
            out[m] = _choice(rng, table, m.size)
    return out


def _make_world(rng: np.random.Generator, users: int, days: int, devices: _Devices) -> _World:
    # Restaurants: ids grouped by city so that R001.. are the Lima ones.
    rest_city = np.array([c for c, k in RESTAURANTS_PER_CITY.items() for _ in range(k)], dtype=object)
    n_rest = len(rest_city)
    rest_id = np.array([f"R{i + 1:03d}" for i in range(n_rest)], dtype=object)
    rest_pop = rng.lognormal(0.0, 0.5, n_rest)
    rest_price = rng.lognormal(0.0, 0.2, n_rest)
    rest_ip = _ips(rng, PERU_IP, n_rest)
    rest_by_city = {c: np.flatnonzero(rest_city == c) for c in REST_CITIES}
    term_count = rng.integers(1, 4, n_rest)
    term_start = np.concatenate([[0], np.cumsum(term_count)[:-1]])
    term_dev = devices.new(int(term_count.sum()))
    term_os = _os_for(rng, np.full(len(term_dev), POS, dtype=object))

    n = users
    tourist = rng.random(n) < 0.25
    home = np.where(tourist, _choice(rng, TOURIST_HOME_WEIGHTS, n), _choice(rng, LOCAL_HOME_WEIGHTS, n))
    age = 21 + np.round(rng.beta(2.5, 3.0, n) * 59).astype(np.int64)  # mean ~48, bulk 30-60
    gender = _choice(rng, {"F": 0.48, "M": 0.49, "X": 0.03}, n)
    typical = 400.0 * rng.lognormal(0.0, 0.3, n) * np.where(tourist, 1.1, 1.0)

    regular = ~tourist & (rng.random(n) < 0.12)
    rate = np.clip(rng.lognormal(math.log(0.11), 0.5, n), 0.05, 0.25)
    rate = np.where(regular, rng.uniform(0.20, 0.25, n), rate)
    trip_len = np.minimum(rng.integers(4, 15, n), days)
    trip_start = np.floor(rng.random(n) * (days - trip_len + 1)).astype(np.int64)
    rate = np.where(tourist, rng.uniform(0.8, 1.6, n), rate)
    dest = np.stack([_choice(rng, TOURIST_DESTINATIONS, n), _choice(rng, TOURIST_DESTINATIONS, n)], axis=1)

    fav_rest = np.full(n, -1, dtype=np.int64)
    for c in REST_CITIES:
        m = np.flatnonzero(~tourist & (home == c))
        if m.size:
            idx = rest_by_city[c]
            fav_rest[m] = rng.choice(idx, size=m.size, p=rest_pop[idx] / rest_pop[idx].sum())

    pref_pay = np.where(tourist, _choice(rng, TOURIST_PAY, n), _choice(rng, LOCAL_PAY, n))
    usd_pref = tourist & (rng.random(n) < 0.7)

    n_dev = 1 + (rng.random(n) < 0.4).astype(np.int64)
    dev_id = devices.new(2 * n).reshape(n, 2)
    dev_type = _choice(rng, PERSONAL_DEVICE_TYPES, 2 * n).reshape(n, 2)
    dev_os = _os_for(rng, dev_type.ravel()).reshape(n, 2)

    ip = np.empty((n, 2), dtype=object)
    locals_ = np.flatnonzero(~tourist)
    ip[locals_, 0] = _ips(rng, PERU_IP, locals_.size)  # home broadband
    ip[locals_, 1] = _ips(rng, PERU_IP, locals_.size)  # mobile carrier
    for c, prefixes in HOME_IP.items():
        m = np.flatnonzero(tourist & (home == c))
        if m.size:
            ip[m, 0] = _ips(rng, prefixes, m.size)  # roaming on the home carrier
    tour = np.flatnonzero(tourist)
    ip[tour, 1] = _ips(rng, PERU_IP, tour.size)  # hotel wifi

    return _World(
        rest_id=rest_id, rest_city=rest_city, rest_pop=rest_pop, rest_price=rest_price, rest_ip=rest_ip,
        rest_by_city=rest_by_city, term_start=term_start, term_count=term_count, term_dev=term_dev,
        term_os=term_os, user_id=np.array([f"U{i + 1:05d}" for i in range(n)], dtype=object), home=home,
        tourist=tourist, age=age, gender=gender, typical=typical, rate=rate, regular=regular,
        fav_rest=fav_rest, pref_pay=pref_pay, usd_pref=usd_pref, trip_start=trip_start, trip_len=trip_len,
        dest=dest, n_dev=n_dev, dev_id=dev_id, dev_type=dev_type, dev_os=dev_os, ip=ip,
    )


def _pick_restaurants(rng: np.random.Generator, w: _World, cities: np.ndarray) -> np.ndarray:
    out = np.full(len(cities), -1, dtype=np.int64)
    for c in REST_CITIES:  # fixed order keeps the random stream deterministic
        m = np.flatnonzero(cities == c)
        if m.size:
            idx = w.rest_by_city[c]
            out[m] = rng.choice(idx, size=m.size, p=w.rest_pop[idx] / w.rest_pop[idx].sum())
    return out


def _pick_restaurant1(rng: np.random.Generator, w: _World, city: str, avoid: set[int] | None = None) -> int:
    idx = w.rest_by_city[city]
    if avoid:
        fresh = np.array([r for r in idx if r not in avoid], dtype=np.int64)
        idx = fresh if fresh.size else idx
    p = w.rest_pop[idx] / w.rest_pop[idx].sum()
    return int(rng.choice(idx, p=p))


# ---------------------------------------------------------------------------------------------
# Legitimate traffic (vectorised)
# ---------------------------------------------------------------------------------------------
def _meal_seconds(rng: np.random.Generator, size: int) -> np.ndarray:
    """Seconds after Lima midnight of a restaurant bill; > 86400 means after midnight."""
    r = rng.random(size)
    lunch = np.clip(rng.normal(14.0 * _H, 0.75 * _H, size), 12.5 * _H, 15.5 * _H)
    dinner = np.clip(rng.normal(21.25 * _H, 0.9 * _H, size), 19.5 * _H, 23.0 * _H)
    brunch = rng.uniform(10.0 * _H, 12.5 * _H, size)
    afternoon = rng.uniform(16.0 * _H, 19.5 * _H, size)
    late = rng.uniform(23.0 * _H, 25.5 * _H, size)  # long dinners paid after midnight
    return np.select([r < 0.42, r < 0.91, r < 0.945, r < 0.975], [lunch, dinner, brunch, afternoon], late)


def _legit(rng: np.random.Generator, w: _World, days: int, start: dt.date, t0: int) -> dict[str, np.ndarray]:
    n = len(w.user_id)
    day_idx = np.arange(days)
    dayf = DOW_FACTOR[(start.weekday() + day_idx) % 7]
    on_trip = (day_idx[None, :] >= w.trip_start[:, None]) & (day_idx[None, :] < (w.trip_start + w.trip_len)[:, None])
    active = np.where(w.tourist[:, None], on_trip, True)
    counts = rng.poisson(w.rate[:, None] * dayf[None, :] * active)
    cell = np.repeat(np.arange(n * days), counts.ravel())
    u, day = cell // days, cell % days
    m = len(u)
    tour = w.tourist[u]

    # What kind of payment: tourists rarely order delivery.
    r = rng.random(m)
    kind = np.where(tour, np.select([r < 0.90, r < 0.98], [0, 1], 2), np.select([r < 0.84, r < 0.92], [0, 1], 2))
    dine, dep, dlv = kind == 0, kind == 1, kind == 2

    # Where: locals mostly at home, tourists follow their two-stop itinerary.
    city = w.home[u].copy()
    travel = ~tour & ~dlv & (rng.random(m) < 0.15)
    city[travel] = _choice(rng, LOCAL_TRAVEL, int(travel.sum()))
    second_half = day >= w.trip_start[u] + w.trip_len[u] // 2
    city[tour] = w.dest[u[tour], second_half[tour].astype(np.int64)]
    rest = _pick_restaurants(rng, w, city)
    fav = ~tour & (city == w.home[u]) & (rng.random(m) < np.where(w.regular[u], 0.5, 0.2))
    rest[fav] = w.fav_rest[u[fav]]

    # When.
    sec = _meal_seconds(rng, m)
    dep_sec = np.where(rng.random(m) < 0.04, rng.uniform(0.0, 2.5 * _H, m), rng.uniform(8.0 * _H, 24.0 * _H, m))
    dlv_sec = np.where(rng.random(m) < 0.4, rng.uniform(12.0 * _H, 15.0 * _H, m), rng.uniform(19.0 * _H, 23.0 * _H, m))
    sec = np.select([dep, dlv], [dep_sec, dlv_sec], sec)

    # How much (PEN). Legitimate look-alikes of fraud are deliberate: large private-dining deposits and
    # catering deliveries (like account takeover), 1-20 PEN card-verification holds (like card testing).
    base = w.typical[u] * w.rest_price[rest]
    amt = np.maximum(base * rng.lognormal(0.0, 0.35, m), 80.0)
    corporate = dine & (rng.random(m) < 0.015)
    amt = np.where(corporate, base * rng.uniform(2.5, 7.0, m), amt)
    r = rng.random(m)
    dep_amt = np.select(
        [r < 0.55, r < 0.90, r < 0.98],
        [np.round(base * rng.uniform(0.3, 0.6, m), -1), rng.choice([100.0, 150.0, 200.0, 250.0, 300.0], m),
         np.where(rng.random(m) < 0.4, rng.choice([1.0, 5.0, 10.0, 20.0], m), rng.uniform(1.0, 20.0, m))],
        np.exp(rng.uniform(math.log(800.0), math.log(6000.0), m)),
    )
    r = rng.random(m)
    dlv_amt = np.where(r < 0.98, np.maximum(base * 0.6 * rng.lognormal(0.0, 0.3, m), 60.0),
                       np.exp(rng.uniform(math.log(800.0), math.log(5000.0), m)))
    amt = np.select([dep, dlv], [dep_amt, dlv_amt], amt)
    banquet = dine & (rng.random(m) < 0.006)
    amt = np.where(banquet, np.exp(rng.uniform(math.log(3000.0), math.log(25000.0), m)), amt)
    night_banquet = banquet & (rng.random(m) < 0.33)  # weddings and corporate dinners end after midnight
    sec = np.where(night_banquet, 24.0 * _H + rng.uniform(0.5 * _H, 3.0 * _H, m), sec)

    # Paid with what.
    pay = w.pref_pay[u].copy()
    other = rng.random(m) >= 0.75
    pay[other & tour] = _choice(rng, TOURIST_PAY, int((other & tour).sum()))
    pay[other & ~tour] = _choice(rng, LOCAL_PAY, int((other & ~tour).sum()))
    usd = np.where(tour, w.usd_pref[u] & (rng.random(m) < 0.85), rng.random(m) < 0.005)

    term = w.term_start[rest] + np.floor(rng.random(m) * w.term_count[rest]).astype(np.int64)
    k = np.floor(rng.random(m) * w.n_dev[u]).astype(np.int64)
    ipk = rng.integers(0, 2, m)
    dev = np.where(dine, w.term_dev[term], w.dev_id[u, k])
    dtype = np.where(dine, POS, w.dev_type[u, k])
    os_ = np.where(dine, w.term_os[term], w.dev_os[u, k])
    ip = np.where(dine, w.rest_ip[rest], w.ip[u, ipk])

    t = t0 + day.astype(np.int64) * 86400 + sec.astype(np.int64)
    ttype = np.array([DINE_IN, DEPOSIT, DELIVERY], dtype=object)[kind]
    rows = dict(t=t, amt=amt, cur=np.where(usd, USD, PEN), pay=pay, ttype=ttype, user=u, rest=rest,
                dev=dev, dtype=dtype, os=os_, ip=ip)

    # Tips are adjusted on the same terminal shortly after some dinners; some are small flat amounts.
    tip = np.flatnonzero(dine & ~banquet & (rng.random(m) < 0.07))
    tip_rows = {key: val[tip].copy() for key, val in rows.items()}
    tip_rows["t"] = tip_rows["t"] + rng.integers(180, 5400, tip.size)
    tip_rows["amt"] = np.where(rng.random(tip.size) < 0.7, tip_rows["amt"] * rng.uniform(0.08, 0.2, tip.size),
                               rng.choice([5.0, 10.0, 15.0, 20.0], tip.size))
    tip_rows["ttype"] = np.full(tip.size, TIP, dtype=object)

    out = {key: np.concatenate([rows[key], tip_rows[key]]) for key in rows}
    total = len(out["t"])
    out["label"] = np.zeros(total, dtype=np.int64)
    out["scen"] = np.full(total, SCENARIO_NONE, dtype=object)
    return out


# ---------------------------------------------------------------------------------------------
# Fraud (incident by incident: a few hundred, so plain loops are fine)
# ---------------------------------------------------------------------------------------------
class _Rows:
    def __init__(self) -> None:
        self.cols: dict[str, list] = {k: [] for k in _KEYS}

    def add(self, **kw) -> None:
        for k in _KEYS:
            self.cols[k].append(kw[k])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.array(v, dtype=object) for k, v in self.cols.items()}
        for k in ("t", "user", "rest", "label"):
            out[k] = np.array(self.cols[k], dtype=np.int64)
        out["amt"] = np.array(self.cols["amt"], dtype=float)
        return out


class _Fraudster:
    def __init__(self, rng: np.random.Generator, w: _World, devices: _Devices, legit: dict[str, np.ndarray],
                 days: int, t0: int):
        self.rng, self.w, self.devices, self.days, self.t0 = rng, w, devices, days, t0
        self.legit = legit
        self.rows = _Rows()
        # Which restaurants each user has paid at: a stolen card at a POS "never used" by the holder.
        self.visited: dict[int, set[int]] = {}
        for uu, rr in zip(legit["user"].tolist(), legit["rest"].tolist()):
            self.visited.setdefault(uu, set()).add(rr)

    # -- shared pieces --
    def _u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def _new_device(self, weights: dict[str, float]) -> tuple[str, str, str]:
        dtype = _choice1(self.rng, weights)
        return str(self.devices.new(1)[0]), dtype, str(_os_for(self.rng, np.array([dtype], dtype=object))[0])

    def _fraud_ip(self, foreign_p: float) -> str:
        return str(_ips(self.rng, FRAUD_IP if self.rng.random() < foreign_p else PERU_IP, 1)[0])

    def _user_currency(self, u: int) -> str:
        return USD if self.w.usd_pref[u] and self.rng.random() < 0.85 else PEN

    def _pos(self, rest: int) -> tuple[str, str, str, str]:
        term = self.w.term_start[rest] + int(self.rng.integers(0, self.w.term_count[rest]))
        return str(self.w.term_dev[term]), POS, str(self.w.term_os[term]), str(self.w.rest_ip[rest])

    def _add(self, scen: str, t: float, amt: float, cur: str, pay: str, ttype: str, u: int, rest: int,
             dev: tuple[str, str, str, str]) -> None:
        self.rows.add(t=int(t), amt=float(amt), cur=cur, pay=pay, ttype=ttype, user=u, rest=rest, dev=dev[0],
                      dtype=dev[1], os=dev[2], ip=dev[3], label=1, scen=scen)

    def _usual(self, u: int, rest: int) -> float:
        return float(self.w.typical[u] * self.w.rest_price[rest])

    def _fraud_mult(self, lo: float, hi: float) -> float:
        # Most fraudsters cash out big, but a third stay under the radar with near-normal bills.
        return self._u(lo, hi) if self.rng.random() < 0.67 else self._u(1.2, lo)

    def _far_cities(self, u: int, exclude: str | None = None) -> list[str]:
        if self.w.tourist[u]:  # every Peruvian city is far; off the tourist route is what is odd
            cands = list(OFF_ROUTE_CITIES)
        else:
            cands = [c for c in REST_CITIES if _DIST_KM[(self.w.home[u], c)] >= FAR_KM]
        cands = [c for c in cands if c != exclude] or [c for c in REST_CITIES if c != exclude]
        return cands

    # -- scenarios --
    def stolen_card(self, incidents: int) -> None:
        rng, w = self.rng, self.w
        for _ in range(incidents):
            u = int(rng.integers(len(w.user_id)))
            cands = self._far_cities(u)
            city = cands[int(rng.integers(len(cands)))]
            day = int(rng.integers(0, self.days - 1))
            # Mostly the dead of night; some in the evening so that the hour alone does not give it away.
            sec = self._u(1.0 * _H, 5.0 * _H) if rng.random() < 0.85 else self._u(19.5 * _H, 23.0 * _H)
            t = self.t0 + day * 86400 + sec
            pay = _choice1(rng, THIEF_PAY)
            cur = PEN if rng.random() < 0.9 else self._user_currency(u)
            if rng.random() < 0.5:  # the physical card at a restaurant the holder never visited
                rest = _pick_restaurant1(rng, w, city, self.visited.get(u))
                dev, ttypes = self._pos(rest), {DINE_IN: 1.0}
            else:  # card details typed into a fresh phone or browser
                rest = _pick_restaurant1(rng, w, city)
                dev = (*self._new_device(PERSONAL_DEVICE_TYPES), self._fraud_ip(0.5))
                ttypes = {DELIVERY: 0.6, DEPOSIT: 0.4}
            for _ in range(1 + int(rng.random() < 0.5) + int(rng.random() < 0.25)):
                self._add(STOLEN_CARD, t, self._usual(u, rest) * self._fraud_mult(3.0, 10.0), cur, pay,
                          _choice1(rng, ttypes), u, rest, dev)
                t += self._u(5 * 60, 90 * 60)

    def card_testing(self, incidents: int) -> None:
        rng, w = self.rng, self.w
        p_rest = w.rest_pop / w.rest_pop.sum()
        for _ in range(incidents):
            u = int(rng.integers(len(w.user_id)))
            rest = int(rng.choice(len(w.rest_id), p=p_rest))
            t = self.t0 + int(rng.integers(0, self.days)) * 86400 + self._u(0.0, 23.5 * _H)  # bots never sleep
            dev = (*self._new_device({WEB: 0.7, ANDROID: 0.15, IOS: 0.15}), self._fraud_ip(0.8))
            pay = _choice1(rng, THIEF_PAY)
            cur = USD if rng.random() < 0.15 else PEN
            for _ in range(int(rng.integers(3, 9))):
                amt = float(rng.integers(1, 21)) if rng.random() < 0.3 else self._u(1.0, 20.0)
                self._add(CARD_TESTING, t, amt, cur, pay, _choice1(rng, {DEPOSIT: 0.75, DELIVERY: 0.25}), u, rest, dev)
                t += self._u(10, 150)

    def account_takeover(self, incidents: int) -> None:
        rng, w = self.rng, self.w
        for _ in range(incidents):
            u = int(rng.integers(len(w.user_id)))
            city = str(w.home[u]) if not w.tourist[u] else _choice1(rng, TOURIST_DESTINATIONS)
            rest = _pick_restaurant1(rng, w, city)
            dev = (*self._new_device(PERSONAL_DEVICE_TYPES), self._fraud_ip(0.55))
            day = int(rng.integers(0, self.days - 2))
            first = self.t0 + day * 86400 + (
                self._u(0.0, 5.0 * _H) if rng.random() < 0.35 else self._u(8.0 * _H, 24.0 * _H))
            t, pay, cur = first, str(w.pref_pay[u]), self._user_currency(u)  # the card stored in the account
            for _ in range(1 + int(rng.random() < 0.5) + int(rng.random() < 0.25)):
                self._add(ACCOUNT_TAKEOVER, t, self._usual(u, rest) * self._fraud_mult(4.0, 12.0), cur, pay,
                          _choice1(rng, {DELIVERY: 0.55, DEPOSIT: 0.45}), u, rest, dev)
                t = min(t + self._u(10 * 60, 10 * _H), first + 23 * _H)

    def compromised_restaurant(self, cards: int) -> None:
        rng, w, lg = self.rng, self.w, self.legit
        lday = (lg["t"] - self.t0) // 86400
        # Only cards handed to staff can be skimmed; wallet payments are tokenised.
        skimmable = np.isin(lg["ttype"], [DINE_IN, TIP]) & (lg["pay"] != WALLET)
        n_rest = int(rng.integers(1, 3))
        chosen: list[int] = []
        for i in range(n_rest):
            need = cards // n_rest + (1 if i < cards % n_rest else 0)
            if need == 0:
                continue
            rest, in_window = self._skim_site(lday, skimmable, chosen)
            if rest < 0:
                continue
            chosen.append(rest)
            # First skimmable visit of each card at that restaurant during the window.
            idx = np.flatnonzero(in_window & (lg["rest"] == rest))
            idx = idx[np.argsort(lg["t"][idx], kind="stable")]
            _, first = np.unique(lg["user"][idx], return_index=True)
            victims = idx[np.sort(first)]
            victims = victims[np.sort(rng.choice(victims.size, size=min(need, victims.size), replace=False))]
            for v in victims.tolist():
                self._defraud_skimmed(v, int(lday[v]), str(w.rest_city[rest]))

    def _skim_site(self, lday: np.ndarray, skimmable: np.ndarray, chosen: list[int]) -> tuple[int, np.ndarray]:
        rng, lg = self.rng, self.legit
        for attempt in range(20):
            if attempt < 19:
                wl = min(int(rng.integers(7, 15)), self.days - 6)
                ws = int(rng.integers(0, self.days - 4 - wl + 1))
            else:  # tiny data: use every day that still leaves room for the 3-day delay
                ws, wl = 0, self.days - 4
            in_window = skimmable & (lday >= ws) & (lday < ws + wl)
            visits = np.bincount(lg["rest"][in_window], minlength=len(self.w.rest_id)).astype(float)
            visits[chosen] = 0.0
            if visits.sum() > 0:
                return int(rng.choice(len(visits), p=visits / visits.sum())), in_window
        return -1, np.zeros(0, dtype=bool)

    def _defraud_skimmed(self, v: int, skim_day: int, skim_city: str) -> None:
        rng, w, lg = self.rng, self.w, self.legit
        u = int(lg["user"][v])
        max_delay = min(20, self.days - 1 - skim_day)
        if max_delay < 3:
            return
        day = skim_day + int(rng.integers(3, max_delay + 1))
        cands = self._far_cities(u, exclude=skim_city)
        city = cands[int(rng.integers(len(cands)))]
        pay, cur = str(lg["pay"][v]), (PEN if rng.random() < 0.9 else str(lg["cur"][v]))
        r = rng.random()  # cloned cards are spent at ordinary hours more often than stolen ones
        sec = self._u(19.0 * _H, 23.0 * _H) if r < 0.55 else (
            self._u(1.0 * _H, 4.5 * _H) if r < 0.8 else self._u(12.0 * _H, 16.0 * _H))
        t = self.t0 + day * 86400 + sec
        if rng.random() < 0.55:  # the cloned card presented at another restaurant
            rest = _pick_restaurant1(rng, w, city, self.visited.get(u))
            dev, ttypes = self._pos(rest), {DINE_IN: 1.0}
        else:
            rest = _pick_restaurant1(rng, w, city)
            dev = (*self._new_device(PERSONAL_DEVICE_TYPES), self._fraud_ip(0.5))
            ttypes = {DELIVERY: 0.5, DEPOSIT: 0.5}
        for _ in range(1 + int(rng.random() < 0.5)):
            self._add(COMPROMISED_RESTAURANT, t, self._usual(u, rest) * self._fraud_mult(3.0, 8.0), cur, pay,
                      _choice1(rng, ttypes), u, rest, dev)
            t += self._u(20 * 60, 3 * _H)


def _fraud(rng: np.random.Generator, w: _World, devices: _Devices, legit: dict[str, np.ndarray], days: int,
           t0: int) -> dict[str, np.ndarray]:
    n_legit = len(legit["t"])
    count = {s: max(1, round(n_legit * share / per)) for s, (share, per) in FRAUD_ROW_SHARE.items()}
    f = _Fraudster(rng, w, devices, legit, days, t0)
    f.stolen_card(count[STOLEN_CARD])
    f.card_testing(count[CARD_TESTING])
    f.account_takeover(count[ACCOUNT_TAKEOVER])
    f.compromised_restaurant(count[COMPROMISED_RESTAURANT])
    return f.rows.arrays()


# ---------------------------------------------------------------------------------------------
# Output: text formatting with the deliberate data problems
# ---------------------------------------------------------------------------------------------
def _format(rng: np.random.Generator, rows: dict[str, np.ndarray], w: _World) -> tuple[pd.DataFrame, np.ndarray]:
    """Return the output frame (all strings, sorted by true time) and the sorted epoch seconds."""
    order = np.argsort(rows["t"], kind="stable")
    r = {k: v[order] for k, v in rows.items()}
    t, m = r["t"], len(r["t"])

    fmt = rng.choice(len(TIMESTAMP_FORMAT_SHARES), size=m, p=list(TIMESTAMP_FORMAT_SHARES.values()))
    utc = pd.to_datetime(t, unit="s")
    lima = pd.to_datetime(timeutil.to_lima(t), unit="s")
    ts = np.empty(m, dtype=object)
    for i, name in enumerate(TIMESTAMP_FORMAT_SHARES):
        sel = fmt == i
        if name == TS_EPOCH:
            ts[sel] = t[sel].astype(str)
        else:
            ts[sel] = np.asarray((utc if name == TS_ISO_UTC else lima)[sel].strftime(name), dtype=object)

    usd = r["cur"] == USD
    amount = np.round(np.where(usd, r["amt"] / F.USD_TO_PEN, r["amt"]), 2)
    amount = np.maximum(amount, 0.01)  # a charge is never free, even after currency conversion
    amount_s = np.char.mod("%.2f", amount).astype(object)
    amount_s[rng.random(m) < MISSING_AMOUNT_RATE] = ""

    age_s = np.char.mod("%d", w.age[r["user"]]).astype(object)
    age_s[rng.random(m) < MISSING_AGE_RATE] = ""
    home = w.home[r["user"]].copy()
    home[rng.random(m) < MISSING_HOME_CITY_RATE] = ""
    city = w.rest_city[r["rest"]].copy()
    city[rng.random(m) < MISSING_CITY_RATE] = ""

    # Same device, different spelling: upstream systems disagree on case and separators.
    dev = pd.Series(r["dev"], dtype=object)
    v = rng.random(m)
    underscore, bare = v < DEVICE_ID_VARIANT_RATE / 2, (v >= DEVICE_ID_VARIANT_RATE / 2) & (v < DEVICE_ID_VARIANT_RATE)
    dev[underscore] = "dev_" + dev[underscore].str[4:].str.lower()
    dev[bare] = "dev" + dev[bare].str[4:].str.lower()

    cols = {
        F.TRANSACTION_ID: np.array([f"TX{i:08d}" for i in range(1, m + 1)], dtype=object),
        F.TIMESTAMP: ts, F.AMOUNT: amount_s, F.CURRENCY: r["cur"], F.PAYMENT_METHOD: r["pay"],
        F.TRANSACTION_TYPE: r["ttype"], F.USER_ID: w.user_id[r["user"]], F.HOME_CITY: home, F.USER_AGE: age_s,
        F.USER_GENDER: w.gender[r["user"]], F.DEVICE_ID: dev.to_numpy(), F.IP_ADDRESS: r["ip"],
        F.DEVICE_TYPE: r["dtype"], F.OS_VERSION: r["os"], F.RESTAURANT_ID: w.rest_id[r["rest"]], F.CITY: city,
        F.LABEL: r["label"].astype(str).astype(object), F.FRAUD_SCENARIO: r["scen"],
    }
    return pd.DataFrame({c: cols[c] for c in OUTPUT_COLUMNS}), t


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def _validate(days: object, users: object, seed: object, start: object) -> None:
    def is_int(x: object) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(days) or days < MIN_DAYS:
        raise ValueError(f"days must be an integer >= {MIN_DAYS} (fraud stories need two weeks), got {days!r}")
    if not is_int(users) or users < MIN_USERS:
        raise ValueError(f"users must be an integer >= {MIN_USERS}, got {users!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
        raise ValueError(f"start must be a datetime.date (a Lima calendar day), got {start!r}")


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ValueError(f"output directory {out_dir} is not empty; refusing to mix generated data with "
                         "existing files (choose a new or empty directory)")


def generate(out_dir: str | Path, *, days: int = synth.DEFAULT_DAYS, users: int = synth.DEFAULT_USERS,
             seed: int = synth.DEFAULT_SEED, start: dt.date = synth.DEFAULT_START,
             progress: Callable[[str], None] | None = None) -> GenerationSummary:
    """Write ``days`` days of transactions starting at Lima midnight of ``start`` into ``out_dir``.

    ``out_dir`` must not exist or be empty. Files are written into a temporary sibling directory that is
    renamed to ``out_dir`` only when everything succeeded, so a failure leaves no output directory.
    """
    _validate(days, users, seed, start)
    out_dir = Path(out_dir).absolute()
    _check_target(out_dir)
    say = progress or (lambda _msg: None)

    rng = np.random.default_rng(seed)
    devices = _Devices(rng)
    t0 = timeutil.lima_midnight_utc(start)
    t_end = t0 + days * 86400

    say(f"building {users} users and {len(REST_CITIES)} restaurant cities")
    world = _make_world(rng, users, days, devices)
    legit = _legit(rng, world, days, start, t0)
    # Bills paid after midnight on the last day would spill out of the period: move them a day back.
    late = legit["t"] >= t_end
    legit["t"][late] -= 86400 * ((legit["t"][late] - t_end) // 86400 + 1)
    say(f"legitimate transactions: {len(legit['t'])}")
    fraud = _fraud(rng, world, devices, legit, days, t0)
    say(f"fraudulent transactions: {len(fraud['t'])}")
    rows = {k: np.concatenate([legit[k], fraud[k]]) for k in _KEYS}
    if rows["t"].min() < t0 or rows["t"].max() >= t_end:  # a bug, not bad luck: fail before writing
        raise AssertionError("generated a transaction outside the requested period")

    frame, t = _format(rng, rows, world)
    lima_dates = pd.to_datetime(timeutil.to_lima(t), unit="s")
    month = np.asarray(lima_dates.strftime("%Y-%m"))

    names: list[str] = []
    with atomic.atomic_path(out_dir, directory=True) as tmp:  # a failure leaves no output directory
        for ym in sorted(set(month.tolist())):
            name = f"{FILE_PREFIX}{ym}.csv"
            part = frame[month == ym]
            part.to_csv(tmp / name, index=False, lineterminator="\n")
            names.append(name)
            say(f"wrote {name} ({len(part)} rows)")
        _check_target(out_dir)  # someone may have filled it while we worked

    labels = rows["label"]
    fraud_rows = int(labels.sum())
    scen = rows["scen"]
    return GenerationSummary(
        rows=len(t), fraud_rows=fraud_rows, fraud_rate=fraud_rows / len(t),
        scenarios={s: int((scen == s).sum()) for s in FRAUD_SCENARIOS},
        files=[str(out_dir / n) for n in names],
        first_day=lima_dates[0].date(), last_day=lima_dates[-1].date(),
    )
