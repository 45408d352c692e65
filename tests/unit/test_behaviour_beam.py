"""The BehaviouralFeatures Beam graph (components/behaviour.py) on data it did not generate: rows without a
device or restaurant id are no entity (no giant "" group), and every feature equals fraud.behaviour's."""
from __future__ import annotations

import math
import os

import apache_beam as beam
import numpy as np
import pytest

from components.behaviour import _Join, build, check_counts, rows_written
from fraud import behaviour as B
from fraud import examples as X
from fraud import features as F
from fraud.errors import LostRows


@pytest.mark.parametrize("missing", [(F.DEVICE_ID,), (F.DEVICE_ID, F.RESTAURANT_ID)])
def test_missing_ids_get_cold_start_features_and_no_shared_history(tmp_path, missing, monkeypatch):
    log = tmp_path / "group_sizes.txt"  # Beam pickles the function: it reports through a file
    original = B.device_features_for_entity

    def recording(events):
        events = list(events)
        with open(log, "a") as f:
            f.write(f"{len(events)}\n")
        return original(events)

    monkeypatch.setattr(B, "device_features_for_entity", recording)  # build() takes it from the module
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
    assert sizes and max(sizes) < 60, f"a device group of {max(sizes)} events: the missing ids were grouped"
    events = [B.Event(r[F.TRANSACTION_ID], r[F.EVENT_TIME], r[F.USER_ID], r[F.AMOUNT], r[F.CITY], r[F.RESTAURANT_ID],
                      r[F.DEVICE_ID], r[F.LABEL]) for r in rows]
    expected = B.compute_offline(events)
    assert len(frame) == n
    for record in frame.to_dict("records"):
        want = expected[record[F.TRANSACTION_ID]]
        for name in F.BEHAVIOUR_FEATURES:
            assert math.isclose(record[name], want[name], rel_tol=1e-5, abs_tol=1e-5), (record[F.TRANSACTION_ID], name)
    no_device = frame[frame[F.DEVICE_ID] == ""]
    assert len(no_device) == n // 2
    assert (no_device["device_distinct_users_30d"] == 0).all() and (no_device["device_txn_count_1d"] == 0).all()
    with_device = frame[frame[F.DEVICE_ID] != ""]
    assert (with_device["device_txn_count_1d"] > 0).any()


def test_lost_rows_are_named_not_written():
    """A split written with fewer (or more) rows than read, or an example whose join lost an entity's features,
    stops the component with the split or the transaction and the entity named."""
    check_counts({"train": 10, "eval": 3}, {"train": 10, "eval": 3})
    with pytest.raises(LostRows, match=r"eval: 2 rows written, 3 read") as info:
        check_counts({"train": 10, "eval": 3}, {"train": 10, "eval": 2})
    assert "train" not in str(info.value).split("(", 1)[1].split(")")[0]
    with pytest.raises(LostRows, match="valid: 0 rows written, 5 read"):
        check_counts({"valid": 5}, {})
    record = X.encode({F.TRANSACTION_ID: "t1"}).SerializeToString()
    user = {n: 0.0 for n in F.BEHAVIOUR_FEATURES if n.startswith("user_")}
    device = {n: 0.0 for n in F.BEHAVIOUR_FEATURES if n.startswith("device_")}
    with pytest.raises(LostRows, match="'t1' lacks .* restaurant features"):
        list(_Join().process(("t1", {"example": [("train", record)], "features": [user, device]})))
    with pytest.raises(LostRows, match="example is missing"):
        list(_Join().process(("t2", {"example": [], "features": [user]})))
