"""From a score and a transaction's features to approve / review / decline, with reasons a reviewer can read.

- Thresholds: `review` when the score is above the operating threshold the pipeline shipped with the served
  version (assets.extra/operating_threshold.json, fraud.threshold), `decline` above the decline threshold.
- Business rules (optional YAML file, see `load_rules`) run before the model: a block-listed card or device is
  declined, an amount above a city's cap goes to review at least. Their reasons come first.
- Reasons name what made the transaction unusual, from the behavioural features (fraud.behaviour): the terms
  of the anomaly score, velocity, travel speed, the restaurant's recent fraud rate.
- Degraded mode (the model cannot be reached within the deadline): rules only, and a transaction no rule
  flags is approved up to `degraded_review_amount_pen`, reviewed above it; the answer says `degraded: true`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fraud import features as F
from fraud.errors import SettingsError

APPROVE, REVIEW, DECLINE = "approve", "review", "decline"
_RANK = {APPROVE: 0, REVIEW: 1, DECLINE: 2}

DEFAULT_DECLINE_THRESHOLD = 0.9  # when the served version ships none (see docs/decisions.md)
DEFAULT_DEGRADED_REVIEW_AMOUNT_PEN = 1500.0


@dataclass(frozen=True)
class Thresholds:
    review: float  # review when score > review
    decline: float  # decline when score > decline

    def as_dict(self) -> dict:
        return {"review": self.review, "decline": self.decline}


@dataclass(frozen=True)
class Rules:
    blocked_cards: frozenset = frozenset()
    blocked_devices: frozenset = frozenset()
    amount_caps_pen: dict = field(default_factory=dict)  # city -> cap (PEN); "*" for every city
    degraded_review_amount_pen: float = DEFAULT_DEGRADED_REVIEW_AMOUNT_PEN


def load_rules(path: str | Path | None) -> Rules:
    """Rules from YAML:

        blocked_cards: [u123, u456]
        blocked_devices: [d9]
        amount_caps_pen: {Lima: 5000, "*": 8000}
        degraded_review_amount_pen: 1500
    """
    if path is None:
        return Rules()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read the rules file {str(path)!r}: {exc}") from None
    known = {"blocked_cards", "blocked_devices", "amount_caps_pen", "degraded_review_amount_pen"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"{path}: unknown rule(s) {unknown}; known: {sorted(known)}")
    try:
        caps = {str(k): float(v) for k, v in (data.get("amount_caps_pen") or {}).items()}
        return Rules(frozenset(map(str, data.get("blocked_cards") or ())),
                     frozenset(map(str, data.get("blocked_devices") or ())), caps,
                     float(data.get("degraded_review_amount_pen", DEFAULT_DEGRADED_REVIEW_AMOUNT_PEN)))
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from None


def rule_hits(rules: Rules, *, user_id: str, device_id: str, city: str, amount_pen: float) -> list[tuple[str, str]]:
    """(outcome at least, reason) for every rule the transaction hits."""
    hits = []
    if user_id in rules.blocked_cards:
        hits.append((DECLINE, "rule: the card is block-listed"))
    if device_id and device_id in rules.blocked_devices:
        hits.append((DECLINE, "rule: the device is block-listed"))
    cap = rules.amount_caps_pen.get(city, rules.amount_caps_pen.get("*"))
    if cap is not None and not math.isnan(amount_pen) and amount_pen > cap:
        hits.append((REVIEW, f"rule: amount {amount_pen:,.0f} PEN above the cap of {cap:,.0f} PEN for {city or 'any city'}"))
    return hits


def reasons(features: dict) -> list[str]:
    """Readable reasons, strongest first, from the behavioural features (names as in fraud.features)."""
    out: list[tuple[float, str]] = []
    ratio = features.get("user_amount_ratio_30d", 1.0)
    if ratio >= 3 and features.get("user_txn_count_30d", 0) >= 3:
        out.append((ratio, f"amount {ratio:.1f}x the card's 30-day average"))
    if features.get("user_device_is_new", 0) >= 1 and features.get("user_txn_count_30d", 0) >= 1:
        out.append((2.0, "a device this card never used before"))
    speed = features.get("user_travel_speed_kmh", 0.0)
    if speed >= 500:
        out.append((speed / 250, f"implied travel speed {speed:,.0f} km/h since the previous payment"))
    count_1h = features.get("user_txn_count_1h", 0.0)
    if count_1h >= 3:
        out.append((count_1h, f"{count_1h:.0f} payments with this card in the last hour"))
    restaurants_1d = features.get("user_distinct_restaurants_1d", 0.0)
    if restaurants_1d >= 3:
        out.append((restaurants_1d, f"{restaurants_1d:.0f} different restaurants today"))
    users = features.get("device_distinct_users_30d", 0.0)
    if users >= 3:
        out.append((users, f"the device was used by {users:.0f} cards in 30 days"))
    # The restaurant's confirmed fraud rate: the window that shows it most (a fresh compromise: the short ones).
    rate, window = max((features.get(F.restaurant_fraud_rate(w), 0.0), w) for w, _ in F.RESTAURANT_FRAUD_WINDOWS)
    if rate >= 0.05:
        span = f"{window[:-1]} day" + ("s" if window != "1d" else "")
        out.append((10 * rate + 1, f"the restaurant's confirmed fraud rate is {100 * rate:.1f}% (over {span} of "
                                   "labelled payments)"))
    # The card's own confirmed frauds (labels at least the label delay old): a reported card still in use.
    card_rate, card_window = max((features.get(F.user_fraud_rate(w), 0.0), w) for w, _ in F.USER_FRAUD_WINDOWS)
    if card_rate > 0:
        out.append((10 * card_rate + 2, f"{100 * card_rate:.0f}% of this card's labelled payments over "
                                        f"{card_window[:-1]} days were confirmed fraud"))
    anomaly = features.get("user_anomaly_score", 0.0)
    if anomaly >= 2 and not out and features.get("user_txn_count_30d", 0.0) > 0:
        out.append((anomaly, f"unusual for this card (anomaly score {anomaly:.1f}: amount, device, city, hour)"))
    if features.get("user_txn_count_30d", 0.0) == 0:
        out.append((0.5, "first payment seen for this card"))
    return [text for _, text in sorted(out, key=lambda x: -x[0])]


def decide(score: float | None, thresholds: Thresholds, hits: list[tuple[str, str]], *, amount_pen: float,
           rules: Rules) -> str:
    """The outcome: the strictest of the rules' and the model's (or, degraded, the amount policy's)."""
    outcome = APPROVE
    if score is None:
        if not math.isnan(amount_pen) and amount_pen > rules.degraded_review_amount_pen:
            outcome = REVIEW
    elif score > thresholds.decline:
        outcome = DECLINE
    elif score > thresholds.review:
        outcome = REVIEW
    for at_least, _ in hits:
        if _RANK[at_least] > _RANK[outcome]:
            outcome = at_least
    return outcome
