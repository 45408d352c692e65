"""Fast checks of the single sources of truth, the model builder and the CLI's bad-usage paths."""
import importlib.util

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

import trainer_module
from fraud import features as F
from tests.helpers import REPO, run_fraudctl


def test_schema_file_is_generated_from_the_feature_module():
    spec = importlib.util.spec_from_file_location("make_schema", REPO / "scripts" / "make_schema.py")
    make_schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_schema)
    committed = text_format.Parse((REPO / "schema" / "schema.pbtxt").read_text(), schema_pb2.Schema())
    assert committed == make_schema.build(), "run scripts/make_schema.py and review the diff"
    names = {f.name for f in committed.feature}
    assert set(F.MODEL_INPUTS) | {F.LABEL} <= names
    assert all(f.presence.min_fraction == 1.0 for f in committed.feature)


def test_model_builds_and_predicts_a_probability_per_row():
    vocab = {name: 5 for name in F.CATEGORICAL_TRANSFORMED_FEATURES}
    model = trainer_module.build_model(vocab, fraud_rate=0.01)
    batch = {name: np.zeros((3, 1), np.float32) for name in F.dense_transformed_features()}
    batch.update({name: np.array([[0], [1], [4]], np.int64) for name in F.CATEGORICAL_TRANSFORMED_FEATURES})
    out = np.asarray(model(batch))
    assert out.shape == (3, 1) and np.all((out > 0) & (out < 1))
    # The output bias starts at the base rate, so an untrained model predicts about 1%.
    assert 0.001 < float(out.mean()) < 0.1


def test_positive_weight_is_sqrt_balanced():
    assert trainer_module.positive_weight(10, 1010) == pytest.approx(10.0)
    assert trainer_module.positive_weight(0, 100) == 1.0


def test_unknown_option_is_a_usage_error():
    proc = run_fraudctl("pipeline", "run", "--no-such-option")
    assert proc.returncode == 2 and "No such option" in proc.stderr


def test_missing_data_dir_is_a_usage_error(tmp_path):
    proc = run_fraudctl("pipeline", "run", "--data", tmp_path / "nope", "--root", tmp_path / "root",
                        "--serving-dir", tmp_path / "serving")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    # the option the user typed, not the settings field or pydantic's prefix
    assert "--data: data directory" in proc.stderr and "data-dir" not in proc.stderr and "Value error" not in proc.stderr
    assert not (tmp_path / "root").exists()


def test_a_database_url_with_a_password_is_refused_before_anything_stores_it(tmp_path):
    """TFX would keep the URL in ML Metadata and the run log: the password goes to libpq's PGPASSWORD or
    ~/.pgpass instead, and nothing the command writes holds it."""
    root = tmp_path / "root"
    proc = run_fraudctl("pipeline", "run", "--data", "postgresql://fraud:s3cret@127.0.0.1:9/fraud", "--root", root,
                        "--serving-dir", tmp_path / "serving")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "carries a password" in proc.stderr and "PGPASSWORD" in proc.stderr and "~/.pgpass" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(b"s3cret" in p.read_bytes() for p in written), written


def test_invalid_setting_is_named(tmp_path):
    proc = run_fraudctl("pipeline", "run", "--data", tmp_path, "--root", tmp_path / "root",
                        "--serving-dir", tmp_path / "serving", "--eval-days", "0")
    assert proc.returncode == 2 and "eval-days" in proc.stderr


def test_generate_refuses_a_non_empty_dir(tmp_path):
    (tmp_path / "x.csv").write_text("a\n")
    proc = run_fraudctl("generate", "--out", tmp_path, "--days", "14", "--users", "50")
    assert proc.returncode != 0 and "not empty" in proc.stderr.lower()


def test_every_subcommand_has_help():
    for args in (["--help"], ["generate", "--help"], ["pipeline", "run", "--help"], ["score", "--help"]):
        proc = run_fraudctl(*args)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, args


def test_bounded_options_show_their_range_and_refuse_values_outside_it(tmp_path):
    from fraud.settings import PipelineSettings

    help_text = " ".join(run_fraudctl("pipeline", "run", "--help").stdout.split())
    eval_days = PipelineSettings.model_fields["eval_days"]
    low = next(c.ge for c in eval_days.metadata if getattr(c, "ge", None) is not None)
    high = next(c.le for c in eval_days.metadata if getattr(c, "le", None) is not None)
    assert "--eval-days INTEGER RANGE" in help_text and f"[{low}<=x<={high}]" in help_text
    assert "--pr-auc-floor FLOAT RANGE" in help_text
    proc = run_fraudctl("pipeline", "run", "--data", tmp_path, "--root", tmp_path / "r", "--serving-dir",
                        tmp_path / "s", "--eval-days", "0")
    assert proc.returncode == 2 and "'--eval-days': 0 is not in the range" in proc.stderr
    # errors name the option the user typed (--data), without pydantic's "Value error," prefix
    proc = run_fraudctl("pipeline", "run", "--data", tmp_path / "missing", "--root", tmp_path / "r",
                        "--serving-dir", tmp_path / "s")
    assert proc.returncode == 2 and "--data: data directory" in proc.stderr and "Value error" not in proc.stderr
    assert "data-dir" not in proc.stderr


def test_cli_reads_a_settings_file_and_the_environment_and_names_bad_values(tmp_path):
    """The CLI uses the same loader as the DAG: --settings FILE, then FRAUD_* variables, then the options."""
    import os
    import subprocess

    from tests.helpers import FRAUDCTL

    file = tmp_path / "fraud.yaml"
    file.write_text(f"pipeline:\n  data_dir: {tmp_path}\n  pipeline_root: {tmp_path}/root\n"
                    f"  serving_dir: {tmp_path}/serving\n  eval_days: 0\n")
    proc = run_fraudctl("pipeline", "run", "--settings", file)
    assert proc.returncode == 2 and "pipeline.eval_days in" in proc.stderr and "greater than or equal" in proc.stderr
    env = {**os.environ, "FRAUD_TRAIN_STEPS": "zero"}
    proc = subprocess.run([FRAUDCTL, "pipeline", "run", "--data", str(tmp_path), "--root", str(tmp_path / "r"),
                           "--serving-dir", str(tmp_path / "s")], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 2 and "FRAUD_TRAIN_STEPS: Input should be a valid integer" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = run_fraudctl("pipeline", "run", "--settings", file, "--eval-days", "3", "--train-steps", "-1")
    assert proc.returncode == 2 and "'--train-steps': -1 is not in the range" in proc.stderr
    assert "eval_days" not in proc.stderr


def test_help_shows_the_settings_defaults_without_restating_them():
    from fraud.settings import PipelineSettings

    proc = run_fraudctl("pipeline", "run", "--help")
    text = " ".join(proc.stdout.split())
    for field in ("train_steps", "alerts_per_day", "eval_days"):
        assert f"[default: {PipelineSettings.model_fields[field].default}]" in text, field
