"""The ground floor of fraud/: one error taxonomy and its exit codes, atomic writes, the tf.Example codec, Lima
time, the data-source dispatch and the one settings loader."""
from __future__ import annotations

import datetime as dt
import os
import pickle

import numpy as np
import tensorflow as tf
import pandas as pd
import pytest

from fraud import atomic, errors, examples, sources, timeutil
from fraud import features as F
from fraud.settings import PipelineSettings, load_pipeline_settings


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------
def test_every_project_error_has_one_base_and_an_exit_code():
    assert errors.exit_code_for(errors.DataContractError("x")) == errors.EXIT_DATA_REJECTED == 4
    assert errors.exit_code_for(errors.DataValidationError("x", ["a", "b"])) == 4
    assert errors.exit_code_for(errors.OutOfOrderEvent("x")) == 4
    assert errors.exit_code_for(errors.DataSourceError("x")) == errors.EXIT_FAILED == 1
    assert errors.exit_code_for(errors.SettingsError("x")) == errors.EXIT_USAGE == 2
    assert errors.exit_code_for(RuntimeError("anything else")) == 1
    # still ValueErrors where they were ValueErrors before
    assert isinstance(errors.DataContractError("x"), ValueError)
    assert errors.DataValidationError("x", ["a", "b"]).anomaly_count == 2


def test_exit_code_follows_the_cause_chain_and_names_the_root():
    try:
        try:
            raise errors.DataValidationError("feature 'amount': out of range")
        except errors.DataValidationError as inner:
            raise RuntimeError("component DataValidationGate failed") from inner
    except RuntimeError as outer:
        caught = outer
    assert errors.exit_code_for(caught) == 4 and errors.is_data_rejected(caught)
    assert errors.root_message(caught) == "DataValidationError: feature 'amount': out of range"


def test_exit_code_of_an_error_that_crossed_a_process_boundary():
    """A Beam worker's failure comes back as another exception whose text is the worker's traceback."""
    text = ("Traceback (most recent call last):\n  File \"apache_beam/runners/worker/...\"\n"
            "fraud.errors.DuplicateTransaction: transaction id 't1' appears 2 times across splits")
    assert errors.exit_code_for(RuntimeError(text)) == 4
    assert errors.error_class(RuntimeError(text)) is errors.DuplicateTransaction
    assert errors.exit_code_for(RuntimeError("ValueError: DataContractError is only mentioned")) == 1


def test_errors_survive_pickling_with_their_class():
    error = pickle.loads(pickle.dumps(errors.DataValidationError("bad")))
    assert type(error) is errors.DataValidationError and str(error) == "bad"


# ---------------------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------------------
def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "out" / "scores.csv"
    atomic.write_text(target, "a\n")
    atomic.write_text(target, "b\n")
    assert target.read_text() == "b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]


def test_atomic_writes_get_the_usual_permissions_not_private_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "report.html", "x")
        with atomic.atomic_path(tmp_path / "data", directory=True):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o755


def test_a_crash_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_crash_while_filling_a_directory_leaves_no_directory(tmp_path):
    target = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target, directory=True) as tmp:
            (tmp / "part.csv").write_text("x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with atomic.atomic_path(target, directory=True) as tmp:
        (tmp / "part.csv").write_text("x")
    assert (target / "part.csv").read_text() == "x"


# ---------------------------------------------------------------------------------------------------------------
# tf.Example codec
# ---------------------------------------------------------------------------------------------------------------
def test_examples_round_trip_through_files(tmp_path):
    records = examples.encode_columns(floats={F.AMOUNT: [1.5, float("nan")]}, ints={F.EVENT_TIME: [10, 20]},
                                      strings={F.CITY: ["Lima", ""]})
    examples.write_records(os.path.join(F.split_dir(str(tmp_path), F.SPLIT_EVAL), "part-0.gz"), records)
    serialized, frame = examples.read_split(str(tmp_path), F.SPLIT_EVAL)
    assert serialized == records
    assert frame[F.EVENT_TIME].tolist() == [10, 20] and frame[F.CITY].tolist() == ["Lima", ""]
    assert frame[F.AMOUNT].iloc[0] == 1.5 and np.isnan(frame[F.AMOUNT].iloc[1])
    with pytest.raises(FileNotFoundError, match="no examples for split 'train'"):
        examples.read_split(str(tmp_path), F.SPLIT_TRAIN)


def test_column_encoding_gives_the_examples_of_the_one_row_encoder():
    """encode_columns (C++, tfx_bsl) and encode (protos built in Python) give the same tf.Examples."""
    floats = {F.AMOUNT: [1.5, float("nan"), 0.0, -2.25e9, float("inf")], F.USER_AGE: [30.0, 41.0, float("nan"), 1, 2]}
    ints = {F.EVENT_TIME: [10, -20, 2**62, 0, 7], F.LABEL: [0, 1, 0, 1, 0]}
    strings = {F.CITY: ["Lima", "", "Cusco", "ñandú", "a,b\n\"c\""], F.USER_ID: ["u1", "u2", "u3", "u4", "u5"]}
    records = examples.encode_columns(floats=floats, ints=ints, strings=strings)
    assert len(records) == 5
    for i, record in enumerate(records):
        row = {**{c: np.float32(v[i]) for c, v in floats.items()}, **{c: np.int64(v[i]) for c, v in ints.items()},
               **{c: v[i] for c, v in strings.items()}}
        expected = examples.encode({c: float(v) if isinstance(v, np.floating) else v for c, v in row.items()})
        got = tf.train.Example.FromString(record)
        assert set(got.features.feature) == set(expected.features.feature)
        for name, feature in expected.features.feature.items():
            kind = feature.WhichOneof("kind")
            assert got.features.feature[name].WhichOneof("kind") == kind, name
            a, b = list(getattr(got.features.feature[name], kind).value), list(getattr(feature, kind).value)
            assert a == b or (kind == "float_list" and np.isnan(a[0]) and np.isnan(b[0])), (name, a, b)
    assert examples.encode_columns(floats={F.AMOUNT: []}, ints={}, strings={}) == []


def test_column_encoding_parses_as_tfx_bsls_encoder_does():
    """Against tfx_bsl's C++ encoder on rows whose lengths need multi-byte varints (strings of 0 to 20,000 bytes,
    negative and huge int64s), over more rows than one encoding chunk."""
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    rng = np.random.default_rng(5)
    rows = examples._ENCODE_CHUNK + 7
    lengths = rng.choice([0, 1, 127, 128, 300, 16383, 16384, 20000], rows, p=[.2, .2, .2, .2, .1, .04, .03, .03])
    strings = {"text": ["ü" * (n // 2) + "x" * (n % 2) for n in lengths], "id": [f"u{i}" for i in range(rows)]}
    ints = {"n": rng.integers(-2**63, 2**63 - 1, rows, dtype=np.int64), "small": rng.integers(0, 300, rows)}
    floats = {"f": rng.normal(size=rows).astype(np.float32)}
    ours = examples.encode_columns(floats=floats, ints=ints, strings=strings)
    columns = {**{c: pa.array(v) for c, v in {**floats, **ints}.items()},
               **{c: pa.array(v, pa.string()).cast(pa.binary()) for c, v in strings.items()}}
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32))
    batch = pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, v) for v in columns.values()],
                                       list(columns))
    theirs = example_coder.RecordBatchToExamples(batch)
    assert len(ours) == len(theirs) == rows
    for i in [0, 1, 2, rows // 2, examples._ENCODE_CHUNK - 1, examples._ENCODE_CHUNK, rows - 1,
              *rng.integers(0, rows, 200)]:
        assert tf.train.Example.FromString(ours[i]) == tf.train.Example.FromString(theirs[i]), i


def test_example_values_and_updates():
    example = examples.encode({F.USER_ID: "u1", F.EVENT_TIME: np.int64(5), F.AMOUNT: 2.0})
    assert examples.value(example, F.USER_ID) == "u1" and examples.value(example, F.EVENT_TIME) == 5
    assert examples.value(example, "absent", "default") == "default"
    examples.set_floats(example, {F.AMOUNT: 3.0, "user_txn_count_1h": 1.0})
    assert examples.value(example, F.AMOUNT) == 3.0 and examples.value(example, "user_txn_count_1h") == 1.0
    with pytest.raises(ValueError, match="different lengths"):
        examples.encode_columns(floats={"a": [1.0]}, ints={"b": [1, 2]}, strings={})


# ---------------------------------------------------------------------------------------------------------------
# Lima time
# ---------------------------------------------------------------------------------------------------------------
def test_lima_time_is_utc_minus_five_all_year():
    midnight = timeutil.lima_midnight_utc(dt.date(2026, 6, 1))
    assert midnight == int(dt.datetime(2026, 6, 1, 5, tzinfo=dt.timezone.utc).timestamp())
    assert timeutil.lima_hour(midnight) == 0 and timeutil.lima_hour(midnight - 1) == 23
    assert timeutil.lima_day(midnight) - timeutil.lima_day(midnight - 1) == 1
    series = pd.Series([midnight, midnight + 3600 * 20])
    assert timeutil.lima_hour(series).tolist() == [0, 20]  # pandas and numpy work the same way
    assert timeutil.from_lima(timeutil.to_lima(12345)) == 12345


# ---------------------------------------------------------------------------------------------------------------
# sources and settings
# ---------------------------------------------------------------------------------------------------------------
def test_a_database_url_is_never_displayed_with_its_password(tmp_path):
    assert sources.is_url("postgresql://u:s3cret@db:5432/fraud") and not sources.is_url(str(tmp_path))
    assert "s3cret" not in sources.display("postgresql://u:s3cret@db:5432/fraud")
    assert sources.display(str(tmp_path)) == str(tmp_path)


def test_settings_precedence_option_over_environment_over_file_over_default(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    file = tmp_path / "fraud.yaml"
    file.write_text(f"pipeline:\n  data_dir: data\n  pipeline_root: {tmp_path}/root\n  serving_dir: /srv/models\n"
                    "  train_steps: 300\n  eval_days: 5\n  valid_days: 4\n")
    env = {"FRAUD_TRAIN_STEPS": "400", "FRAUD_EVAL_DAYS": "6", "FRAUD_UNRELATED": "another tool's"}
    settings = load_pipeline_settings({"train_steps": 500}, file=file, environ=env)
    assert settings.train_steps == 500  # the option
    assert settings.eval_days == 6  # the environment
    assert settings.valid_days == 4  # the file
    assert settings.pr_auc_floor == PipelineSettings.model_fields["pr_auc_floor"].default  # the default
    assert settings.data_dir == str(data)  # relative to the file's folder
    assert settings.metadata_path == tmp_path / "root" / F.METADATA_FILE


def test_settings_errors_name_where_the_value_came_from(tmp_path):
    base = {"data_dir": str(tmp_path), "pipeline_root": tmp_path / "r", "serving_dir": tmp_path / "s"}
    with pytest.raises(errors.SettingsError, match=r"FRAUD_EVAL_DAYS: Input should be greater than or equal to 1"):
        load_pipeline_settings(base, environ={"FRAUD_EVAL_DAYS": "0"})
    with pytest.raises(errors.SettingsError, match=r"--train-steps: Input should be a valid integer"):
        load_pipeline_settings({**base, "train_steps": "many"}, option_name=lambda f: "--" + f.replace("_", "-"))
    file = tmp_path / "bad.yaml"
    file.write_text("pipeline:\n  train_step: 10\n")
    with pytest.raises(errors.SettingsError, match=r"pipeline\.train_step in .*bad\.yaml: Extra inputs"):
        load_pipeline_settings(base, file=file)
    with pytest.raises(errors.SettingsError, match="data-dir: required; pipeline-root: required"):
        load_pipeline_settings({})


def test_create_pipeline_gets_every_argument_from_the_settings(tmp_path):
    """create_pipeline() has no defaults: the settings are their only home."""
    import inspect

    from pipeline.definition import create_pipeline

    params = inspect.signature(create_pipeline).parameters
    assert all(p.default is inspect.Parameter.empty for p in params.values())
    kwargs = PipelineSettings(data_dir=str(tmp_path), pipeline_root=tmp_path / "r",
                              serving_dir=tmp_path / "s").pipeline_kwargs()
    assert set(kwargs) == set(params)


def test_column_encoding_in_threaded_slices_keeps_every_row_in_order(monkeypatch):
    ids = [f"t{i}" for i in range(11)]
    whole = examples.encode_columns(floats={F.AMOUNT: list(range(11))}, ints={}, strings={F.TRANSACTION_ID: ids})
    monkeypatch.setattr(examples, "_ENCODE_CHUNK", 3)  # four slices, encoded by the thread pool
    sliced = examples.encode_columns(floats={F.AMOUNT: list(range(11))}, ints={}, strings={F.TRANSACTION_ID: ids})
    parse = tf.train.Example.FromString  # proto equality: the encoder's order of map entries may differ
    assert len(sliced) == 11 and [parse(r) for r in sliced] == [parse(r) for r in whole]
    assert [examples.value(tf.train.Example.FromString(r), F.TRANSACTION_ID) for r in sliced] == ids


def _fake_model(path):
    for name, data in (("saved_model.pb", b"pb" * 100), ("fingerprint.pb", b"f"), ("variables/variables.index", b"i"),
                       ("variables/variables.data-00000-of-00001", b"d" * 1000), ("assets.extra/warmup", b"w")):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_a_publish_that_fails_or_dies_at_any_file_leaves_no_version_and_readers_keep_the_previous(tmp_path):
    """fraud.atomic.publish_tree, the Pusher's copy: a full disk (ENOSPC) or a killed process at any file
    leaves no numeric folder, so the scorer and the model servers keep the previous version."""
    import errno
    import multiprocessing
    import shutil

    from fraud.scoring import resolve_version_dir

    source = _fake_model(tmp_path / "model")
    base = tmp_path / "serving" / "fraud_detector"
    atomic.publish_tree(source, base / "100")
    count = len(_files(source))
    for k in range(count):
        calls = []

        def full_disk(src, dst, k=k, calls=calls):
            calls.append(src)
            if len(calls) > k:
                raise OSError(errno.ENOSPC, "No space left on device")
            shutil.copy2(src, dst)

        with pytest.raises(OSError, match="No space left"):
            atomic.publish_tree(source, base / "200", copy_file=full_disk)
        assert sorted(p.name for p in base.iterdir()) == ["100"], f"failure at file {k} left something behind"
        assert resolve_version_dir(base) == base / "100"

        def dies(src, dst, k=k, calls=[]):
            calls.append(src)
            if len(calls) > k:
                os._exit(9)  # a kill: no exception handler, no clean-up
            shutil.copy2(src, dst)

        child = multiprocessing.get_context("fork").Process(
            target=atomic.publish_tree, args=(source, base / "200"), kwargs={"copy_file": dies})
        child.start()
        child.join(30)
        assert child.exitcode == 9
        names = [p.name for p in base.iterdir()]
        assert "200" not in names and resolve_version_dir(base) == base / "100", names
        assert all(n == "100" or (n.startswith(".") and n.endswith(atomic.STAGING_SUFFIX)) for n in names), names
        assert atomic.remove_stale_staging(base, older_than_s=0)  # the next push removes what the kill left
    atomic.publish_tree(source, base / "200")
    assert resolve_version_dir(base) == base / "200" and _files(base / "200") == _files(source)
    with pytest.raises(FileExistsError):
        atomic.publish_tree(source, base / "200")
