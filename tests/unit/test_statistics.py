"""fraud.statistics (the StatisticsGen executor's in-process TFDV statistics) against TFDV's own Beam path on the same
records: the same features, counts, missing values, numeric summaries and the top values of every categorical."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fraud import examples as X
from fraud import statistics as S


def _example(amount: float, city: str, count: int, device: str | None) -> bytes:
    feature = {"amount": tf.train.Feature(float_list=tf.train.FloatList(value=[amount])),
               "city": tf.train.Feature(bytes_list=tf.train.BytesList(value=[city.encode()])),
               "count": tf.train.Feature(int64_list=tf.train.Int64List(value=[count]))}
    if device is not None:
        feature["device"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[device.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _records(rows: int, seed: int, *, ragged_from: int | None = None) -> list[bytes]:
    rng = np.random.default_rng(seed)
    cities = np.array(["Lima", "Cusco", "Arequipa", "Piura", ""])
    out = []
    for i in range(rows):
        amount = float("nan") if i % 17 == 0 else float(rng.lognormal(4.5, 1.0))
        device = None if ragged_from is not None and i >= ragged_from and i % 3 == 0 else f"D{rng.integers(0, 40)}"
        out.append(_example(amount, str(cities[rng.integers(0, len(cities))]), int(rng.integers(0, 1000)), device))
    return out


def _by_name(stats):
    (dataset,) = stats.datasets
    return dataset.num_examples, {f.path.step[0]: f for f in dataset.features}


@pytest.mark.parametrize("ragged_from", [None, 700], ids=["dense", "a-feature-missing-in-later-batches"])
def test_in_process_statistics_equal_tfdvs_beam_statistics(tmp_path, ragged_from):
    import tensorflow_data_validation as tfdv

    path = str(tmp_path / "data_tfrecord-00000-of-00001.gz")
    X.write_records(path, _records(2_000, seed=3, ragged_from=ragged_from))
    ours = S.split_statistics([path], rows=512)  # several batches, merged; the ragged ones take the decoder
    beam = tfdv.generate_statistics_from_tfrecord(data_location=path)
    rows, mine = _by_name(ours)
    beam_rows, theirs = _by_name(beam)
    assert rows == beam_rows == 2_000
    assert set(mine) == set(theirs) == ({"amount", "city", "count", "device"})
    for name, expected in theirs.items():
        got = mine[name]
        kind = expected.WhichOneof("stats")
        assert got.type == expected.type and got.WhichOneof("stats") == kind, name
        if kind == "num_stats":
            e, g = expected.num_stats, got.num_stats
            assert g.common_stats.num_non_missing == e.common_stats.num_non_missing, name
            assert g.common_stats.num_missing == e.common_stats.num_missing, name
            assert (g.min, g.max, g.num_zeros) == (e.min, e.max, e.num_zeros), name
            assert g.mean == pytest.approx(e.mean, rel=1e-9) and g.std_dev == pytest.approx(e.std_dev, rel=1e-9)
            assert [b.sample_count for b in g.histograms[0].buckets] == pytest.approx(
                [b.sample_count for b in e.histograms[0].buckets])
        else:
            e, g = expected.string_stats, got.string_stats
            assert g.common_stats.num_non_missing == e.common_stats.num_non_missing, name
            assert g.common_stats.num_missing == e.common_stats.num_missing, name
            assert g.unique == e.unique, name
            assert {(v.value, v.frequency) for v in g.top_values} == {(v.value, v.frequency) for v in e.top_values}
    if ragged_from is not None:
        assert mine["device"].string_stats.common_stats.num_missing > 0


def test_an_empty_split_has_statistics_of_no_rows(tmp_path):
    path = str(tmp_path / "empty.gz")
    X.write_records(path, [])
    rows, features = _by_name(S.split_statistics([path]))
    assert rows == 0 and features == {}


def test_a_distributed_runner_keeps_the_stock_beam_executor():
    from components.statistics import distributed_runner

    assert distributed_runner([]) == ""
    assert distributed_runner(["--runner=DirectRunner", "--direct_running_mode=in_memory"]) == ""
    assert distributed_runner(["--runner=DataflowRunner", "--project=p"]) == "DataflowRunner"
    assert distributed_runner(["--runner", "FlinkRunner"]) == "FlinkRunner"
