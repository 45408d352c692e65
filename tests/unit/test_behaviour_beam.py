"""The BehaviouralFeatures Beam graph (components/behaviour.py) on data it did not generate: rows without a
device or restaurant id are no entity (no giant "" group), and every feature equals fraud.behaviour's."""
from __future__ import annotations

import math
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf

from components.behaviour import _check_unique, _Join, build, check_counts, rows_written
from fraud import behaviour as B
from fraud import examples as X
from fraud import features as F
from fraud.errors import DuplicateTransaction, LostRows


@pytest.mark.parametrize("missing", [(F.DEVICE_ID,), (F.DEVICE_ID, F.RESTAURANT_ID)])
def test_missing_ids_get_cold_start_features_and_no_shared_history(tmp_path, missing, monkeypatch):
    log = tmp_path / "group_sizes.txt"  # Beam pickles the function: it reports through a file
    original = B.device_features

    def recording(history, targets):
        with open(log, "a") as f:
            f.write(f"{_largest_entity(history.device_id)}\n")
        return original(history, targets)

    monkeypatch.setattr(B, "device_features", recording)  # build() takes it from the module
    rng = np.random.default_rng(3)
    n = 400
    rows = []
    for i in range(n):
        row = {F.TRANSACTION_ID: f"t{i}", F.EVENT_TIME: 1_700_000_000 + int(rng.integers(0, 20 * 86400)),
               F.USER_ID: f"u{int(rng.integers(0, 40))}", F.AMOUNT: float(rng.uniform(20, 900)), F.CURRENCY: "PEN",
               F.CITY: "Lima", F.RESTAURANT_ID: f"r{int(rng.integers(0, 5))}", F.DEVICE_ID: f"d{int(rng.integers(0, 30))}",
               F.LABEL: int(rng.random() < 0.05)}
        if i % 2:  # half the rows lack the ids: they must not form one entity
            for column in missing:
                row[column] = ""
        rows.append(row)
    X.write_records(str(tmp_path / "in" / "Split-train" / "data.gz"), [X.encode(r).SerializeToString() for r in rows])
    with beam.Pipeline() as p:
        build(p, {"train": str(tmp_path / "in" / "Split-train" / "*.gz")}, str(tmp_path / "out"), label_delay_days=7)
    assert rows_written(p.result, ["train"]) == {"train": n}  # what the component compares with ExampleGen's counts
    out = X.read_records([os.path.join(F.split_dir(str(tmp_path / "out"), "train"), f)
                          for f in os.listdir(F.split_dir(str(tmp_path / "out"), "train"))])
    frame = X.decode_frame(out)
    sizes = [int(x) for x in log.read_text().split()]
    assert sizes and max(sizes) < 60, f"a device with {max(sizes)} events: the missing ids were grouped"
    events = [B.Event(r[F.TRANSACTION_ID], r[F.EVENT_TIME], r[F.USER_ID], r[F.AMOUNT], r[F.CITY], r[F.RESTAURANT_ID],
                      r[F.DEVICE_ID], r[F.LABEL]) for r in rows]
    expected = B.compute_offline(events)
    assert len(frame) == n
    for record in frame.to_dict("records"):
        want = expected[record[F.TRANSACTION_ID]]
        for name in F.BEHAVIOUR_FEATURES:
            assert math.isclose(record[name], want[name], rel_tol=1e-5, abs_tol=1e-5), (record[F.TRANSACTION_ID], name, record[name], want[name])
    no_device = frame[frame[F.DEVICE_ID] == ""]
    assert len(no_device) == n // 2
    assert (no_device["device_distinct_users_30d"] == 0).all() and (no_device["device_txn_count_1d"] == 0).all()
    with_device = frame[frame[F.DEVICE_ID] != ""]
    assert (with_device["device_txn_count_1d"] > 0).any()


def _largest_entity(ids) -> int:
    """The most events one entity (a non-empty id) has in a history."""
    from collections import Counter

    counts = Counter(i for i in ids.tolist() if i)
    return max(counts.values()) if counts else 0


def _hot_events(ids, hot) -> int:
    return int((ids == hot).sum())


def test_lost_rows_are_named_not_written(tmp_path):
    """A split written with fewer (or more) rows than read, or an example whose join lost an entity's features,
    stops the component with the split or the transaction and the entity named."""
    check_counts({"train": 10, "eval": 3}, {"train": 10, "eval": 3})
    with pytest.raises(LostRows, match=r"eval: 2 rows written, 3 read") as info:
        check_counts({"train": 10, "eval": 3}, {"train": 10, "eval": 2})
    assert "train" not in str(info.value).split("(", 1)[1].split(")")[0]
    with pytest.raises(LostRows, match="valid: 0 rows written, 5 read"):
        check_counts({"valid": 5}, {})
    path = str(tmp_path / "in.gz")
    X.write_records(path, [X.encode({F.TRANSACTION_ID: "t1"}).SerializeToString()])
    join = _Join([("train", 0, path)], batch_rows=10)
    user = ("user", 0, np.array([0]), np.zeros((1, len(F.USER_BEHAVIOUR_FEATURES)), np.float32))
    device = ("device", 0, np.array([0]), np.zeros((1, len(F.DEVICE_BEHAVIOUR_FEATURES)), np.float32))
    restaurant = ("restaurant", 0, np.array([0]), np.zeros((1, len(F.RESTAURANT_BEHAVIOUR_FEATURES)), np.float32))
    with pytest.raises(LostRows, match="'t1' has 0 sets of its restaurant features"):
        list(join.process((0, [user, device])))
    with pytest.raises(LostRows, match="'t1' has 2 sets of its device features"):
        list(join.process((0, [user, device, device, restaurant])))
    with pytest.raises(LostRows, match="batch 1 of .*in.gz, which has 1 batches"):
        list(join.process((0, [user, device, restaurant, ("user", 1) + user[2:]])))
    [written] = [out.value for out in join.process((0, [user, device, restaurant]))]
    assert len(written) == 1 and tf.train.Example.FromString(written[0]).features.feature[
        F.BEHAVIOUR_FEATURES[0]].float_list.value[0] == 0.0
    with pytest.raises(DuplicateTransaction, match="'t3' appears 2 times"):
        _check_unique((0, [pa.array(["t1", "t3"]), pa.array(["t3"])]))
    assert _check_unique((0, [pa.array(["t1", "t3"])])) == []


def test_appended_features_decode_as_set_features():
    """FloatSuffix (features appended to the serialized example, no parse) gives the example set_floats gives,
    including a feature the record already had (replaced) and NaN."""
    record = X.encode({F.TRANSACTION_ID: "t1", F.AMOUNT: 12.5, F.USER_ID: "u",
                       F.BEHAVIOUR_FEATURES[0]: 99.0}).SerializeToString()
    values = [0.5 * i for i in range(len(F.BEHAVIOUR_FEATURES))]
    values[3] = float("nan")
    appended = tf.train.Example.FromString(record + X.FloatSuffix(F.BEHAVIOUR_FEATURES)(values))
    expected = X.set_floats(tf.train.Example.FromString(record), dict(zip(F.BEHAVIOUR_FEATURES, values)))
    got, want = appended.features.feature, expected.features.feature
    assert sorted(got) == sorted(want) and len(got) == 3 + len(F.BEHAVIOUR_FEATURES)
    for name in want:
        a, b = got[name], want[name]
        assert a.WhichOneof("kind") == b.WhichOneof("kind"), name
        av, bv = list(getattr(a, a.WhichOneof("kind")).value), list(getattr(b, b.WhichOneof("kind")).value)
        assert len(av) == 1 and (av == bv or (math.isnan(av[0]) and math.isnan(bv[0]))), name
    assert got[F.BEHAVIOUR_FEATURES[0]].float_list.value[0] == 0.0  # the record's 99.0 replaced
    with pytest.raises(ValueError, match="3 values for"):
        X.FloatSuffix(F.BEHAVIOUR_FEATURES)([1.0, 2.0, 3.0])
    # Many rows at once: the same bytes as one call per row (float32, NaN and infinities included).
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(50, len(F.BEHAVIOUR_FEATURES))) * 1e3
    matrix[3, 5], matrix[7, 0], matrix[9, 2] = np.nan, np.inf, -np.inf
    suffix = X.FloatSuffix(F.BEHAVIOUR_FEATURES)
    assert suffix.many(matrix) == [suffix(row) for row in matrix.astype(np.float32).tolist()]
    assert suffix.many(np.zeros((0, len(F.BEHAVIOUR_FEATURES)))) == []


def test_hot_keys_are_grouped_per_time_block_with_the_same_features(tmp_path, monkeypatch):
    """A restaurant with most of the rows and a device shared by many cards are split into time blocks of their
    look-back (each block carrying the previous one as history): no group holds the hot key's whole history, and
    every feature still equals the in-memory computation over whole histories."""
    log = tmp_path / "group_sizes.txt"
    originals = {kind: getattr(B, f"{kind}_features") for kind in ("device", "restaurant")}
    hot_id = {"device": "shared", "restaurant": "hot"}

    def recording(kind):
        def fn(history, targets, **kwargs):
            with open(log, "a") as f:
                f.write(f"{kind} {_hot_events(getattr(history, kind + '_id'), hot_id[kind])}\n")
            return originals[kind](history, targets, **kwargs)
        return fn

    for kind in originals:
        monkeypatch.setattr(B, f"{kind}_features", recording(kind))
    rng = np.random.default_rng(5)
    n, days = 900, 200
    rows = []
    for i in range(n):
        hot = rng.random() < 0.7
        rows.append({F.TRANSACTION_ID: f"t{i}", F.EVENT_TIME: 1_700_000_000 + int(rng.integers(0, days * 86400)),
                     F.USER_ID: f"u{int(rng.integers(0, 60))}", F.AMOUNT: float(rng.uniform(20, 900)),
                     F.CURRENCY: "PEN", F.CITY: "Lima",
                     F.RESTAURANT_ID: "hot" if hot else f"r{int(rng.integers(0, 8))}",
                     F.DEVICE_ID: "shared" if hot else f"d{int(rng.integers(0, 40))}",
                     F.LABEL: int(rng.random() < 0.1)})
    X.write_records(str(tmp_path / "in" / "Split-train" / "data.gz"), [X.encode(r).SerializeToString() for r in rows])
    with beam.Pipeline() as p:
        build(p, {"train": str(tmp_path / "in" / "Split-train" / "*.gz")}, str(tmp_path / "out"), label_delay_days=7,
              batch_rows=200)
    assert rows_written(p.result, ["train"]) == {"train": n}
    out_dir = F.split_dir(str(tmp_path / "out"), "train")
    frame = X.decode_frame(X.read_records([os.path.join(out_dir, f) for f in os.listdir(out_dir)]))
    hot_rows = sum(r[F.RESTAURANT_ID] == "hot" for r in rows)
    sizes = {}
    for line in log.read_text().split("\n"):
        if line:
            kind, size = line.split()
            sizes.setdefault(kind, []).append(int(size))
    for kind in ("device", "restaurant"):
        # at most two look-backs (37 or 30 days) of the 200: well under the hot key's whole history
        assert max(sizes[kind]) < 0.6 * hot_rows, (kind, max(sizes[kind]), hot_rows)
        assert len([s for s in sizes[kind] if s > 100]) >= 4, sizes[kind]  # the hot key was split into blocks
    events = [B.Event(r[F.TRANSACTION_ID], r[F.EVENT_TIME], r[F.USER_ID], r[F.AMOUNT], r[F.CITY], r[F.RESTAURANT_ID],
                      r[F.DEVICE_ID], r[F.LABEL]) for r in rows]
    monkeypatch.undo()
    expected = B.compute_offline(events)
    assert len(frame) == n and set(frame[F.TRANSACTION_ID]) == set(expected)
    assert (frame["restaurant_fraud_rate_delayed_30d"] > 0).any()
    for record in frame.to_dict("records"):
        want = expected[record[F.TRANSACTION_ID]]
        for name in F.BEHAVIOUR_FEATURES:
            assert math.isclose(record[name], want[name], rel_tol=1e-5, abs_tol=1e-5), (record[F.TRANSACTION_ID], name, record[name], want[name])


def test_look_backs_bound_the_time_blocks():
    day = 86400
    assert B.lookback_s("user") is None  # "new device / city / hour" read the whole history: no blocks
    assert B.lookback_s("restaurant", label_delay_days=7) == 37 * day
    assert B.lookback_s("restaurant", label_delay_days=0) == 30 * day
    assert B.lookback_s("device") == 30 * day


def test_splits_of_several_files_get_every_row_once_with_the_features_of_one_file(tmp_path):
    """Splits written as several files (ExampleGen shards large splits; other producers write many) are numbered
    apart: the features equal those of the same rows written as one file per split."""
    rng = np.random.default_rng(9)
    rows = [{F.TRANSACTION_ID: f"t{i}", F.EVENT_TIME: 1_700_000_000 + int(rng.integers(0, 60 * 86400)),
             F.USER_ID: f"u{int(rng.integers(0, 30))}", F.AMOUNT: float(rng.uniform(20, 900)), F.CURRENCY: "PEN",
             F.CITY: "Lima", F.RESTAURANT_ID: f"r{int(rng.integers(0, 5))}",
             F.DEVICE_ID: f"d{int(rng.integers(0, 20))}",
             F.LABEL: int(rng.random() < 0.1)} for i in range(700)]
    rows.sort(key=lambda r: r[F.EVENT_TIME])
    splits = {"train": rows[:500], "valid": rows[500:600], "eval": rows[600:]}
    frames = {}
    for layout, files in (("one", {"train": 1, "valid": 1, "eval": 1}), ("many", {"train": 3, "valid": 2, "eval": 1})):
        inputs = {}
        for split, part in splits.items():
            records = [X.encode(r).SerializeToString() for r in part]
            for k, piece in enumerate(np.array_split(np.array(records, dtype=object), files[split])):
                X.write_records(str(tmp_path / layout / "in" / split / f"part-{k}.gz"), piece.tolist())
            inputs[split] = str(tmp_path / layout / "in" / split / "*.gz")
        with beam.Pipeline() as p:
            build(p, inputs, str(tmp_path / layout / "out"), label_delay_days=7, batch_rows=64)
        assert rows_written(p.result, list(splits)) == {s: len(part) for s, part in splits.items()}
        frames[layout] = pd.concat([X.decode_frame(X.read_records(X.split_files(str(tmp_path / layout / "out"), s)))
                                    for s in splits]).sort_values(F.TRANSACTION_ID).reset_index(drop=True)
    assert len(frames["many"]) == len(rows) and frames["many"][F.TRANSACTION_ID].is_unique
    pd.testing.assert_frame_equal(frames["many"][list(F.BEHAVIOUR_FEATURES)], frames["one"][list(F.BEHAVIOUR_FEATURES)])
