"""Behavioural features: hand-checked values, point-in-time correctness, offline/online parity."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from fraud import behaviour as B
from fraud import features as F
from fraud import ingest
from tests.helpers import generate

H, D = 3600, 86400
T0 = 1_780_000_000


def ev(tid, t, user="u1", amount=100.0, city="Lima", restaurant="R1", device="d1", label=0):
    return B.Event(tid, T0 + t, user, amount, city, restaurant, device, label)


def test_user_features_by_hand():
    events = [ev("a", 0), ev("b", 30 * 60, amount=300.0), ev("c", 2 * H, amount=float("nan"), city="Cusco",
                                                               device="d2")]
    f = B.compute_offline(events)
    assert f["a"]["user_txn_count_30d"] == 0 and f["a"]["user_device_is_new"] == 1.0
    assert f["a"]["user_secs_since_prev"] == B.MAX_GAP_S and f["a"]["user_amount_ratio_30d"] == 1.0
    b = f["b"]
    assert b["user_txn_count_1h"] == 1 and b["user_amount_sum_1h"] == 100.0 and b["user_amount_ratio_30d"] == 3.0
    assert b["user_secs_since_prev"] == 1800 and b["user_device_is_new"] == 0.0
    first = {name: value for name, value in f["a"].items() if value != 0}
    assert first == F.FIRST_TRANSACTION_FEATURES  # what serving/example.py sends for a first-time card
    c = f["c"]  # 2 h later in Cusco on a new device, amount missing
    assert c["user_txn_count_1h"] == 0 and c["user_txn_count_1d"] == 2 and c["user_amount_mean_1d"] == 200.0
    assert c["user_device_is_new"] == 1.0 and c["user_amount_ratio_30d"] == 1.0
    km = F.haversine_km(*F.CITY_COORDS["Lima"], *F.CITY_COORDS["Cusco"])
    assert c["user_travel_speed_kmh"] == pytest.approx(km / 1.5)
    assert c["user_distinct_cities_1d"] == 1 and c["user_distinct_restaurants_1d"] == 1


def test_same_second_events_do_not_see_each_other():
    f = B.compute_offline([ev("a", 0), ev("b", 0), ev("c", 1)])
    assert f["a"]["user_txn_count_1h"] == f["b"]["user_txn_count_1h"] == 0
    assert f["c"]["user_txn_count_1h"] == 2


def test_device_features():
    f = B.compute_offline([ev("a", 0, user="u1"), ev("b", H, user="u2"), ev("c", 2 * H, user="u3"),
                           ev("d", 3 * H, user="u4", device="")])
    assert f["c"]["device_distinct_users_30d"] == 2 and f["c"]["device_txn_count_1d"] == 2
    assert f["d"]["device_distinct_users_30d"] == 0  # unknown device: no history to share


def test_restaurant_fraud_rate_uses_only_labels_older_than_the_delay():
    events = [ev(f"old{i}", i * H, user=f"u{i}", label=1 if i < 2 else 0) for i in range(4)]  # day 0: 2/4 fraud
    events += [ev("recent", 10 * D, user="x", label=1)]  # 3 days before the query: label not known yet
    events += [ev("q", 13 * D, user="y")]
    f = B.compute_offline(events)
    assert f["q"]["restaurant_fraud_rate_delayed_30d"] == pytest.approx(0.5)
    assert f["q"]["restaurant_txn_count_7d"] == 1 and f["q"]["restaurant_txn_count_30d"] == 5
    # At 6 days after day 0 nothing is old enough.
    assert B.compute_offline(events[:4] + [ev("early", 6 * D, user="z")])["early"][
        "restaurant_fraud_rate_delayed_30d"] == 0.0


def test_card_fraud_rate_uses_only_its_own_labels_older_than_the_delay():
    # Card c1: 3 labelled payments on days 0-2 (one fraud), one on day 20 (fraud, too recent at day 25).
    events = [ev(f"c{i}", i * D, user="c1", restaurant=f"R{i}", label=1 if i == 1 else 0) for i in range(3)]
    events += [ev("recent", 20 * D, user="c1", label=1), ev("other", 2 * D, user="c2", label=1)]
    events += [ev("q", 25 * D, user="c1"), ev("q2", 25 * D, user="c2")]
    f = B.compute_offline(events)
    # 30-day window [t-37d, t-7d] = days -12..18: c0, c1, c2 (1 fraud in 3); 7-day window days 11..18: nothing.
    assert f["q"][F.user_fraud_rate("30d")] == pytest.approx(1 / 3)
    assert f["q"][F.user_fraud_rate("7d")] == 0.0
    assert f["q2"][F.user_fraud_rate("30d")] == 1.0  # another card's labels are its own
    assert f["c2"][F.user_fraud_rate("30d")] == 0.0  # day 2: day 1's fraud is not known yet
    # A week after the day-20 fraud, the 7-day window [t-14d, t-7d] holds it alone.
    assert B.compute_offline(events[:4] + [ev("q3", 27 * D + 1, user="c1")])["q3"][
        F.user_fraud_rate("7d")] == 1.0


def test_anomaly_score_terms():
    history = [ev(f"h{i}", i * D + 20 * H, amount=100.0 + i) for i in range(5)]  # dinners in Lima
    normal = ev("n", 5 * D + 20 * H, amount=104.0)
    odd = ev("o", 5 * D + 4 * H, amount=5000.0, city="Cusco", device="new")  # new device, city, hour; 50x
    f = B.compute_offline(history + [normal, odd])
    assert f["n"]["user_anomaly_score"] < 1.0
    assert f["o"]["user_anomaly_score"] >= 3.0 + 1.0  # new device + new city + big amount z (+ hour)


def _replay_online(events):
    state = B.OnlineFeatureState()
    return {e.transaction_id: state.score_and_update(e) for e in sorted(events, key=lambda e: (e.time, e.transaction_id))}


def test_offline_and_online_agree_on_a_generated_stream(tmp_path):
    data = generate(tmp_path / "d", days=20, users=300)
    frame = ingest.standardise(ingest.read_csv_dir(data), require_label=True).frame
    events = B.events_from_frame(frame)
    offline = B.compute_offline(events)
    online = _replay_online(events)
    assert len(offline) == len(online) == len(frame)
    mismatches = [(tid, k) for tid in offline for k in F.BEHAVIOUR_FEATURES
                  if not math.isclose(offline[tid][k], online[tid][k], rel_tol=1e-9, abs_tol=1e-9)]
    assert not mismatches, mismatches[:5]
    assert set(offline[events[0].transaction_id]) == set(F.BEHAVIOUR_FEATURES)
    assert any(f["user_txn_count_1d"] > 0 for f in offline.values())
    assert any(f["restaurant_fraud_rate_delayed_30d"] > 0 for f in offline.values())


def test_online_state_rejects_out_of_order_and_duplicates_and_cold_starts():
    state = B.OnlineFeatureState()
    state.score_and_update(ev("a", 100))
    with pytest.raises(B.OutOfOrderEvent, match="time order"):
        state.score_and_update(ev("b", 50))
    with pytest.raises(B.DuplicateTransaction):
        state.update(ev("a", 200))
    cold = state.features(ev("z", 300, user="never-seen", device="never-seen", restaurant="never-seen"))
    assert cold["user_txn_count_30d"] == 0 and cold["user_device_is_new"] == 1.0
    assert cold["device_distinct_users_30d"] == 0 and cold["restaurant_txn_count_30d"] == 0


event_strategy = st.builds(
    lambda i, t, u, a, c, r, d, l: B.Event(f"t{i}", T0 + t, f"u{u}", a, c, f"R{r}", f"d{d}", l),
    st.integers(0, 10**6), st.integers(0, 40 * D), st.integers(0, 3),
    st.one_of(st.just(float("nan")), st.floats(0, 5000)), st.sampled_from(["Lima", "Cusco", "", "Atlantis"]),
    st.integers(0, 2), st.integers(0, 3), st.sampled_from([0, 1, -1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(event_strategy, min_size=2, max_size=40, unique_by=lambda e: e.transaction_id),
       st.integers(0, 40 * D), st.randoms(use_true_random=False))
def test_point_in_time_changing_the_future_never_changes_the_past(events, cut, rnd):
    """Changing or deleting any row at or after t leaves every feature of rows before t unchanged."""
    t = T0 + cut
    before = {tid: f for tid, f in B.compute_offline(events).items()
              if next(e for e in events if e.transaction_id == tid).time < t}
    changed = []
    for e in events:
        if e.time < t:
            changed.append(e)
        elif rnd.random() < 0.5:  # delete it, or rewrite everything but its time-order position
            changed.append(B.Event(e.transaction_id, e.time + rnd.randint(0, D), e.user_id,
                                   rnd.uniform(0, 9999), "Cusco", "R0", "d0", 1))
    after = B.compute_offline(changed)
    for tid, feats in before.items():
        assert after[tid] == pytest.approx(feats, nan_ok=True), tid


def test_card_precision_at_k_by_hand():
    from fraud.tfma_metrics import card_precision_at_k
    import numpy as np

    days = np.array([0, 0, 0, 0, 1, 1, 1])
    cards = np.array(["a", "b", "b", "c", "a", "d", "e"])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.99, 0.5, 0.4])
    labels = np.array([1, 0, 0, 0, 1, 1, 0])
    # Day 0, k=2: cards a (0.9, fraud) and b (0.8) -> 1/2. Day 1: a already flagged; d (fraud), e -> 1/2.
    assert card_precision_at_k(days, cards, scores, labels, k=2) == 0.5
    # k=1: day 0 -> a (fraud) 1/1; day 1 -> d (a excluded) fraud -> 1/1.
    assert card_precision_at_k(days, cards, scores, labels, k=1) == 1.0
    # Precision is over k even when fewer cards exist (investigators had spare capacity).
    assert card_precision_at_k(days, cards, scores, labels, k=4) == pytest.approx((1 / 4 + 1 / 4) / 2)


def test_distinct_values_in_windows_equal_a_fresh_count():
    """The sliding count behind the distinct-cities/restaurants/users features equals len(set(values[lo:hi]))
    (values < 0, a missing value, not counted) for windows walking forward, for jumps back, for windows given
    in any order and on a busy entity with few values."""
    import random

    import numpy as np

    rnd = random.Random(7)
    values = np.array([rnd.randint(-1, 12) for _ in range(3000)])
    windows, lo, hi = [], 0, 0
    for step in range(4000):
        if step % 500 == 499:  # a jump back
            lo = rnd.randint(0, 2999)
            hi = rnd.randint(lo, 3000)
        else:
            hi = min(3000, hi + rnd.randint(0, 3))
            lo = min(hi, lo + rnd.randint(0, 3))
        windows.append((lo, hi))
    rnd.shuffle(windows)
    los, his = np.array([w[0] for w in windows]), np.array([w[1] for w in windows])
    got = B._distinct_in_windows(values, los, his)
    want = [len({v for v in values[a:b].tolist() if v >= 0}) for a, b in windows]
    assert got.tolist() == want
    assert B._distinct_in_windows(np.array([], dtype=np.int64), np.array([0]), np.array([0])).tolist() == [0]


def test_short_restaurant_fraud_windows_see_a_fresh_compromise_the_30_day_rate_dilutes():
    # 20 clean days of 5 payments, then one day with 4 frauds out of 5; queried 7 days (the delay) after it.
    events = [ev(f"c{d}_{i}", d * D + i * H, user=f"u{d}_{i}", label=0) for d in range(20) for i in range(5)]
    events += [ev(f"x{i}", 20 * D + i * H, user=f"x{i}", label=1 if i < 4 else 0) for i in range(5)]
    events += [ev("q", 28 * D, user="q")]
    f = B.compute_offline(events)["q"]
    # 1-day window [t-8d, t-7d] = day 20 only; 7 days = days 14-20; 30 days = all 21 days.
    assert f["restaurant_fraud_rate_delayed_1d"] == pytest.approx(4 / 5)
    assert f["restaurant_fraud_rate_delayed_7d"] == pytest.approx(4 / 35)
    assert f["restaurant_fraud_rate_delayed_30d"] == pytest.approx(4 / 105)
    assert B.compute_offline(events[:100] + [ev("before", 20 * D, user="b")])["before"][
        "restaurant_fraud_rate_delayed_1d"] == 0.0
