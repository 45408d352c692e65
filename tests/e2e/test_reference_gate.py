"""Training that learns from data it did not generate, and the gates that stop a model that did not learn.

The data: a payment processor's terminal export (fraud.synth.terminals): required columns plus restaurant_id, in
time order, whose only fraud signal is terminal compromise, visible only through the terminals' delayed fraud
rates (labels at least 7 days old): the first week of every compromise is invisible, and the train split's first
week has no known label at all. Amounts, hours and cards carry nothing.
"""
from __future__ import annotations

import json
import re

import pytest

from fraud import examples as X
from fraud import features as F
from fraud.runs import summarize
from fraud.synth.terminals import terminal_export
from tests.helpers import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compromise_data(tmp_path_factory):
    return terminal_export(tmp_path_factory.mktemp("terminals") / "data")


def _blessings(root):
    """(producer, blessed) of every ModelBlessing in ML Metadata, oldest first."""
    import sqlite3

    with sqlite3.connect(root / F.METADATA_FILE) as db:
        rows = db.execute("SELECT a.uri, p.int_value FROM ArtifactProperty p JOIN Artifact a ON a.id = p.artifact_id "
                          "JOIN Type t ON t.id = a.type_id WHERE t.name = 'ModelBlessing' AND p.name = 'blessed' "
                          "ORDER BY a.id").fetchall()
    return [(F.NODE_REFERENCE_GATE if f"/{F.NODE_REFERENCE_GATE}/" in uri else F.NODE_EVALUATOR, b)
            for uri, b in rows]


def test_a_signal_seen_only_after_the_label_delay_is_learned_and_passes_the_reference_gate(compromise_data,
                                                                                            tmp_path):
    # The floor on PR-AUC is lowered as for the other exports: no single row says anything, so precision is hard.
    run = run_pipeline(compromise_data, tmp_path / "root", tmp_path / "serving", "--train-steps", "1000",
                       "--pr-auc-floor", "0.05")
    assert run.exit_code == 0, run.output[-4000:]
    summary = summarize(str(run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    assert summary.candidate[F.METRIC_ROC_AUC] > 0.8, summary.candidate
    gate = summary.reference
    assert gate.passed and gate.blessed and {r.name for r in gate.references} == set(F.REFERENCES)
    assert all(not r.error and r.metrics[F.METRIC_ROC_AUC] > 0.7 for r in gate.references), gate.references
    assert "reference gate passed" in run.output and len(run.versions()) == 1
    assert _blessings(run.root) == [(F.NODE_EVALUATOR, 1), (F.NODE_REFERENCE_GATE, 1)]
    # The export's shape: no guest profile (an all-missing user_age passes validation), terminals counted.
    assert f"{F.USER_AGE}: missing in every row" in run.output
    behaviour = next(c for c in summary.components if c.node_id == F.NODE_BEHAVIOUR)
    (artifact,) = behaviour.outputs["Examples"]
    frame = X.read_split(artifact.uri, F.SPLIT_EVAL)[1]
    assert (frame["restaurant_txn_count_30d"] > 0).mean() > 0.9  # the terminals' histories are there


def test_the_reference_gate_refuses_a_crippled_candidate_and_the_report_says_why(compromise_data, tmp_path):
    """One training step: with the Trainer's floor and the Evaluator's PR-AUC floor at 0, the Evaluator blesses
    it (first run: no baseline); the reference gate refuses it, nothing is pushed, and it is not a baseline."""
    run = run_pipeline(compromise_data, tmp_path / "root", tmp_path / "serving", "--train-steps", "1",
                       "--min-valid-roc-auc", "0", "--pr-auc-floor", "0")
    assert run.exit_code == 3, run.output[-4000:]
    assert "reference gate refused: candidate PR-AUC" in run.output, run.output[-3000:]
    assert run.versions() == []
    assert _blessings(run.root) == [(F.NODE_EVALUATOR, 1), (F.NODE_REFERENCE_GATE, 0)]
    report = next((run.root / F.REPORTS_DIR).glob("*.html")).read_text()
    assert re.search(r'id="reference-gate" data-status="FAILED"[^>]*>Refused: candidate PR-AUC', report)
    assert "NOT BLESSED: failed the reference gate (refused: candidate PR-AUC" in report
    payload = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', report,
                                   re.S).group(1).replace("<\\/", "</"))
    gate = payload["reference_gate"]
    assert gate["blessed"] is False and gate["evaluator_blessed"] is True
    best = max(r["metrics"][F.METRIC_PR_AUC] for r in gate["references"])
    assert gate["candidate"][F.METRIC_PR_AUC] < best - gate["tolerance"]


def test_a_model_that_learned_nothing_fails_the_trainer_by_name(compromise_data, tmp_path):
    run = run_pipeline(compromise_data, tmp_path / "root", tmp_path / "serving", "--train-steps", "1",
                       "--min-valid-roc-auc", "0.9999")
    assert run.exit_code == 1, run.output[-4000:]
    assert "FAILED in Trainer: ModelRejected: the trained model (epoch 1) has validation ROC-AUC" in run.output
    assert "below the floor 0.9999 (--min-valid-roc-auc)" in run.output
    ran = {c.node_id for c in summarize(str(run.root / F.METADATA_FILE), F.PIPELINE_NAME).components}
    assert F.NODE_EVALUATOR not in ran and run.versions() == []
