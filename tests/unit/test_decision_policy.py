"""The decision policy (fraud.decisions): thresholds, business rules from YAML, degraded mode, reasons."""
from __future__ import annotations

import math

import pytest

from fraud import decisions as D
from fraud import features as F
from fraud.errors import SettingsError

T = D.Thresholds(review=0.01, decline=0.9)


def test_thresholds_make_the_outcome():
    rules = D.Rules()
    assert D.decide(0.005, T, [], amount_pen=100.0, rules=rules) == D.APPROVE
    assert D.decide(0.01, T, [], amount_pen=100.0, rules=rules) == D.APPROVE  # "above", strictly
    assert D.decide(0.02, T, [], amount_pen=100.0, rules=rules) == D.REVIEW
    assert D.decide(0.95, T, [], amount_pen=100.0, rules=rules) == D.DECLINE


def test_rules_from_yaml_run_before_the_model_and_only_make_it_stricter(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("blocked_cards: [U-9]\nblocked_devices: [d-1]\namount_caps_pen: {Lima: 5000, '*': 8000}\n"
                    "degraded_review_amount_pen: 1200\n")
    rules = D.load_rules(path)
    assert rules.blocked_cards == {"U-9"} and rules.amount_caps_pen == {"Lima": 5000.0, "*": 8000.0}
    hits = D.rule_hits(rules, user_id="U-9", device_id="d-2", city="Cusco", amount_pen=100.0)
    assert [h[0] for h in hits] == [D.DECLINE] and "block-listed" in hits[0][1]
    assert D.decide(0.0001, T, hits, amount_pen=100.0, rules=rules) == D.DECLINE
    lima = D.rule_hits(rules, user_id="U-1", device_id="", city="Lima", amount_pen=6000.0)
    cusco = D.rule_hits(rules, user_id="U-1", device_id="", city="Cusco", amount_pen=6000.0)
    assert [h[0] for h in lima] == [D.REVIEW] and "5,000 PEN" in lima[0][1] and cusco == []
    assert D.decide(0.0001, T, lima, amount_pen=6000.0, rules=rules) == D.REVIEW
    assert D.decide(0.95, T, lima, amount_pen=6000.0, rules=rules) == D.DECLINE  # the model may be stricter
    assert D.rule_hits(rules, user_id="U-1", device_id="", city="Lima", amount_pen=math.nan) == []


def test_degraded_mode_reviews_large_amounts_only():
    rules = D.Rules(degraded_review_amount_pen=1500.0)
    assert D.decide(None, T, [], amount_pen=900.0, rules=rules) == D.APPROVE
    assert D.decide(None, T, [], amount_pen=2000.0, rules=rules) == D.REVIEW
    assert D.decide(None, T, [], amount_pen=math.nan, rules=rules) == D.APPROVE


def test_a_bad_rules_file_is_a_settings_error_naming_the_key(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("blocked_card: [U-9]\n")
    with pytest.raises(SettingsError, match="blocked_card"):
        D.load_rules(path)
    path.write_text("amount_caps_pen: {Lima: lots}\n")
    with pytest.raises(SettingsError, match="rules.yaml"):
        D.load_rules(path)
    with pytest.raises(SettingsError, match="cannot read"):
        D.load_rules(tmp_path / "missing.yaml")


def test_reasons_name_what_is_unusual_strongest_first():
    usual = {"user_txn_count_30d": 12, "user_amount_ratio_30d": 1.1, "user_device_is_new": 0.0}
    assert D.reasons(usual) == []
    odd = {**usual, "user_amount_ratio_30d": 8.0, "user_device_is_new": 1.0, "user_travel_speed_kmh": 900.0,
           "restaurant_fraud_rate_delayed_30d": 0.1}
    got = D.reasons(odd)
    assert got[0] == "amount 8.0x the card's 30-day average"
    assert "a device this card never used before" in got and any("900 km/h" in r for r in got)
    assert any("10.0%" in r for r in got)
    assert D.reasons({"user_txn_count_30d": 0.0}) == ["first payment seen for this card"]
    reported = {**usual, F.user_fraud_rate("7d"): 0.5, F.user_fraud_rate("30d"): 0.25}
    assert D.reasons(reported) == ["50% of this card's labelled payments over 7 days were confirmed fraud"]
