"""ML Metadata -> ReportData: everything the report shows about one run, read through fraud.runs and the run's
artifacts, plus the per-row work TFMA does not keep (per-transaction scores, PEN amounts, the alert-budget table,
the reference models)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from fraud import features as F
from fraud import runs
from fraud.report.data import examples_artifact, list_anomalies, output, run_drifts, split_rows
from fraud.report.metrics import decision_rows, load_evaluation, tfma_metrics_from_scores
from fraud.report.model import (BUDGET_FACTORS, MIN_FRAUD_TO_JUDGE_SLICE, OP_ALERTS_PER_DAY, OP_PRECISION,
                                OP_RECALL, WEAK_RECALL_GAP, WEAK_ROC_AUC_GAP, Curves, Evaluation, ReportData)


def amount_pen(frame) -> np.ndarray:
    """The charged amount in PEN (USD at the fixed rate), 0 when missing: what the alert table adds up."""
    amount = frame[F.AMOUNT].to_numpy(np.float64)
    usd = (frame[F.CURRENCY] == "USD").to_numpy() if F.CURRENCY in frame else np.zeros(len(frame), bool)
    return np.nan_to_num(np.where(usd, amount * F.USD_TO_PEN, amount))


def _serving_dir(model_artifact) -> str:
    from tfx.utils import path_utils

    return path_utils.serving_model_path(model_artifact.uri)


def operating_threshold_of(model_artifact):
    """(OperatingThreshold | None, where it came from) recorded with a model artifact."""
    from fraud.threshold import read_threshold, threshold_path

    if model_artifact is None:
        return None, ""
    model_dir = _serving_dir(model_artifact)
    op = read_threshold(model_dir)
    return (op, threshold_path(model_dir)) if op else (None, "")


def default_alerts_per_day() -> float:
    """The pipeline's default alert budget (for models that predate the OperatingThresholdSelector)."""
    from fraud.settings import PipelineSettings

    return float(PipelineSettings.model_fields["alerts_per_day"].default)


def alert_budget_table(data_eval, curves: Curves | None, thresholds: list[tuple[float, float]], days: int,
                       operating: float | None) -> list[dict]:
    """For each (budget, threshold): alerts/day, precision, recall (TFMA's matrices) and PEN caught/missed."""
    from fraud.threshold import flagged

    labels = data_eval["label"].to_numpy() > 0.5
    amounts = data_eval["amount_pen"].to_numpy()
    scores = data_eval["score"].to_numpy()
    rows = []
    merged: dict = {}
    for budget, t in thresholds:  # budgets that land on the same grid threshold share one row
        merged.setdefault(t, []).append(budget)
    for t, budgets in merged.items():
        budget = budgets[0]
        mask = flagged(scores, t)
        own = {"tp": float((mask & labels).sum()), "fp": float((mask & ~labels).sum())}
        cm = curves.at(t) if curves is not None else None
        source = cm if cm is not None else {**own, "fn": float((~mask & labels).sum())}
        tp, fp, fn = source["tp"], source["fp"], source["fn"]
        caught, missed = float(amounts[mask & labels].sum()), float(amounts[~mask & labels].sum())
        rows.append({
            "budget_per_day": budget, "budgets": budgets, "threshold": t,
            "operating": operating is not None and abs(t - operating) < 1e-9,
            "alerts": tp + fp, "alerts_per_day": (tp + fp) / max(days, 1), "tp": tp, "fp": fp,
            "false_alarms_per_day": fp / max(days, 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "pen_caught": caught, "pen_missed": missed,
            "pen_caught_share": caught / (caught + missed) if caught + missed else float("nan"),
            "source": "TFMA" if cm is not None else "scores",
            "count_mismatch": abs(own["tp"] - tp) + abs(own["fp"] - fp),
        })
    return rows


def slice_rows(evaluation: Evaluation, op: float | None, baseline_op: float | None, days: int) -> list[dict]:
    overall = evaluation.metrics.get("", {}).get(F.CANDIDATE, {})
    overall_roc = overall.get(F.METRIC_ROC_AUC)
    overall_cm = evaluation.curves.get("", {}).get(F.CANDIDATE)
    overall_recall = (overall_cm.at(op) or {}).get("recall") if overall_cm is not None and op is not None else None
    rows = []
    for name, by_model in evaluation.metrics.items():
        if not name:
            continue
        m = by_model.get(F.CANDIDATE, {})
        b = by_model.get(F.BASELINE, {})
        count = m.get(F.METRIC_EXAMPLE_COUNT, 0.0)
        fraud = round(m.get(F.METRIC_MEAN_LABEL, 0.0) * count)
        cm = evaluation.curves.get(name, {}).get(F.CANDIDATE)
        at = cm.at(op) if cm is not None and op is not None else None
        bcm = evaluation.curves.get(name, {}).get(F.BASELINE)
        bat = bcm.at(baseline_op) if bcm is not None and baseline_op is not None else None
        column, _, value = name.partition("=")
        row = {"slice": name, "column": column, "value": value, "examples": count, "fraud": fraud,
               "fraud_rate": fraud / count if count else float("nan"),
               "pr_auc": m.get(F.METRIC_PR_AUC), "roc_auc": m.get(F.METRIC_ROC_AUC),
               "recall_at_1pct_fpr": m.get(F.METRIC_RECALL_AT_1PCT_FPR), "calibration": m.get(F.METRIC_CALIBRATION),
               "precision_at_op": at["precision"] if at else None, "recall_at_op": at["recall"] if at else None,
               "alerts_per_day": at["alerts"] / max(days, 1) if at else None,
               "baseline_pr_auc": b.get(F.METRIC_PR_AUC), "baseline_recall_at_op": bat["recall"] if bat else None,
               "status": "ok", "why": ""}
        if fraud < MIN_FRAUD_TO_JUDGE_SLICE:
            row["status"], row["why"] = "few", f"only {fraud} fraud case(s): too few to judge"
        else:
            reasons = []
            if row["recall_at_op"] is not None and overall_recall is not None and \
                    row["recall_at_op"] < overall_recall - WEAK_RECALL_GAP:
                reasons.append(f"catches {row['recall_at_op']:.0%} of fraud vs {overall_recall:.0%} overall")
            if row["roc_auc"] is not None and overall_roc is not None and \
                    row["roc_auc"] < overall_roc - WEAK_ROC_AUC_GAP:
                reasons.append(f"ROC-AUC {row['roc_auc']:.3f} vs {overall_roc:.3f} overall")
            if reasons:
                row["status"], row["why"] = "weak", "; ".join(reasons)
        rows.append(row)
    order = {c: i for i, c in enumerate(F.SLICE_COLUMNS)}
    return sorted(rows, key=lambda r: (order.get(r["column"], 99), -r["examples"]))


def collect(root: Path, pipeline_name: str = F.PIPELINE_NAME, run_id: str | None = None, *,
            references: bool = True) -> ReportData:
    """Everything the report shows, read from ML Metadata and the run's artifacts."""
    import pandas as pd

    from fraud import examples as X
    from fraud.threshold import (OperatingThreshold, choose_threshold, load_examples_signature, score_serialized,
                                 split_days)

    timings: dict = {}
    t0 = time.time()
    root = Path(root).resolve()
    run_name, nodes = runs.read_run(str(root / F.METADATA_FILE), pipeline_name, run_id)
    examples = examples_artifact(nodes)
    splits = split_rows(examples) if examples is not None else {}
    warnings = []
    anomalies = None
    try:
        anomalies = list_anomalies(nodes)
    except Exception as exc:  # a report of a broken run must still render
        warnings.append(f"anomalies not read: {exc}")
    drifts = []
    try:
        drifts = run_drifts(nodes)
    except Exception as exc:
        warnings.append(f"drift not measured: {exc}")
    timings["metadata, statistics"] = time.time() - t0

    evaluator = nodes.get(F.NODE_EVALUATOR)
    evaluation_artifact = evaluator.artifact("evaluation") if evaluator else None
    evaluation = None
    if evaluation_artifact is not None and evaluator.state == "COMPLETE":
        t = time.time()
        evaluation = load_evaluation(evaluation_artifact.uri)
        timings["TFMA result"] = time.time() - t
    blessing = evaluator.artifact("blessing") if evaluator else None
    blessed = bool(runs.props(blessing).get("blessed", 0)) if blessing is not None else None
    gate, gate_note = None, ""
    gate_node = nodes.get(F.NODE_REFERENCE_GATE)
    gate_blessing = gate_node.artifact("blessing") if gate_node is not None else None
    if gate_node is None:
        gate_note = f"{F.NODE_REFERENCE_GATE} did not run"
    elif gate_node.state != "COMPLETE" or gate_blessing is None:
        gate_note = f"{F.NODE_REFERENCE_GATE} ended {gate_node.state}: see its log (Run section)"
    else:
        from fraud.reference import read_result  # lazily: fraud.reference imports fraud.report.metrics

        try:
            gate = read_result(gate_blessing.uri)
            blessed = gate.blessed
        except (OSError, ValueError, TypeError) as exc:
            gate_note = f"the reference gate's result cannot be read: {type(exc).__name__}: {exc}"
            warnings.append(gate_note)
    pushed = runs.props(output(nodes, F.NODE_PUSHER, "pushed_model"))

    candidate_model = evaluator.artifact("model", output=False) if evaluator else None
    if candidate_model is None:
        candidate_model = output(nodes, F.NODE_TRAINER, "model")
    baseline_model = evaluator.artifact("baseline_model", output=False) if evaluator else None
    operating, operating_source = operating_threshold_of(candidate_model)
    baseline_operating, baseline_source = operating_threshold_of(baseline_model)

    overall = evaluation.metrics.get("", {}) if evaluation else {}
    data = ReportData(
        run_id=run_name, pipeline_name=pipeline_name, root=str(root), nodes=nodes, splits=splits,
        anomalies=anomalies, drifts=drifts, evaluation=evaluation, blessed=blessed,
        failed_thresholds=runs.failed_thresholds(evaluation.uri) if evaluation else [],
        decision=decision_rows(evaluation.eval_config, evaluation.validation, overall.get(F.CANDIDATE, {}),
                               overall.get(F.BASELINE, {})) if evaluation else [],
        pushed=pushed, has_baseline=bool(overall.get(F.BASELINE)),
        operating=operating, operating_source=operating_source, baseline_operating=baseline_operating,
        baseline_operating_source=baseline_source, eval_days=(splits.get(F.SPLIT_EVAL) or {}).get("days") or 0,
        eval_frame=None, alert_table=[], slices=[], references=[], recompute_max_diff=None,
        timings=timings, warnings=warnings, reference_gate=gate, reference_gate_note=gate_note)
    if evaluation is None or examples is None or candidate_model is None:
        data.references_note = "the run has no evaluated model"
        return data

    # Per-row scores of the candidate on eval (and valid, for thresholds not recorded with the model).
    t = time.time()
    serialized_eval, eval_frame = X.read_split(examples.uri, F.SPLIT_EVAL)
    serialized_valid, valid_frame = X.read_split(examples.uri, F.SPLIT_VALID)
    signature = load_examples_signature(_serving_dir(candidate_model))
    eval_scores = score_serialized(signature, serialized_eval)
    valid_scores = score_serialized(signature, serialized_valid)
    timings["scoring eval + valid"] = time.time() - t
    data.eval_days = split_days(eval_frame[F.EVENT_TIME])
    valid_days = split_days(valid_frame[F.EVENT_TIME])
    if operating is None:
        budget = default_alerts_per_day()
        threshold, alerts = choose_threshold(valid_scores, valid_days, budget)
        data.operating = OperatingThreshold(threshold, budget, F.SPLIT_VALID, valid_days, len(valid_scores), alerts)
        data.operating_source = ("not recorded with this model (it predates the OperatingThresholdSelector): "
                                 f"chosen by this report, same rule, default budget {budget:g}/day")
    op = data.operating
    if baseline_model is not None and baseline_operating is None:
        data.baseline_operating = op
        data.baseline_operating_source = "not recorded with the baseline model: the candidate's threshold is used"
    frame = pd.DataFrame({"label": eval_frame[F.LABEL].to_numpy(np.float32), "score": eval_scores,
                          "amount_pen": amount_pen(eval_frame)})
    for column in F.SLICE_COLUMNS:
        frame[column] = eval_frame[column].to_numpy()
    data.eval_frame = frame

    # Scores -> TFMA's own metric code: must reproduce the stored result.
    recomputed, _ = tfma_metrics_from_scores(frame["label"], frame["score"], evaluation.eval_config, eval_frame)
    stored = data.candidate
    common = [k for k in recomputed if k in stored and not math.isnan(stored[k]) and not math.isnan(recomputed[k])]
    data.recompute_max_diff = max((abs(recomputed[k] - stored[k]) for k in common), default=None)

    # Operating-threshold metrics (TFMA's matrices at the threshold) for candidate and baseline.
    for model, threshold in ((F.CANDIDATE, op.threshold),
                             (F.BASELINE, data.baseline_operating.threshold if data.baseline_operating else None)):
        curves = evaluation.curves.get("", {}).get(model)
        at = curves.at(threshold) if curves is not None and threshold is not None else None
        target = evaluation.metrics.get("", {}).get(model)
        if at and target is not None:
            target[OP_PRECISION], target[OP_RECALL] = at["precision"], at["recall"]
            target[OP_ALERTS_PER_DAY] = at["alerts"] / max(data.eval_days, 1)

    # Other budgets: the same rule on the split the operating threshold was chosen on.
    choice_scores, choice_days = ((eval_scores, data.eval_days) if op.split == F.SPLIT_EVAL
                                  else (valid_scores, valid_days))
    budgets = sorted({round(op.alerts_per_day_budget * f, 1) for f in BUDGET_FACTORS})
    pairs = []
    for budget in budgets:
        if abs(budget - op.alerts_per_day_budget) < 1e-9:
            pairs.append((budget, op.threshold))
        else:
            pairs.append((budget, choose_threshold(choice_scores, choice_days, budget)[0]))
    data.alert_table = alert_budget_table(frame, evaluation.curves.get("", {}).get(F.CANDIDATE), pairs,
                                          data.eval_days, op.threshold)
    data.slices = slice_rows(evaluation, op.threshold,
                             data.baseline_operating.threshold if data.baseline_operating else None, data.eval_days)

    if not references:
        data.references_note = "not requested"
        return data
    from fraud.report.references import reference_inputs, reference_models

    t = time.time()
    try:
        inputs, data.references_note = reference_inputs(nodes, examples.uri, serialized_eval, serialized_valid)
    except Exception as exc:  # a report of a broken run must still render
        inputs, data.references_note = None, f"the reference inputs could not be built: {type(exc).__name__}: {exc}"
    timings["reference inputs (Transform graph)"] = time.time() - t
    if inputs is not None:
        t = time.time()
        try:
            data.references = reference_models(inputs, eval_frame, evaluation.eval_config, op.alerts_per_day_budget,
                                               valid_days=valid_days, eval_days=data.eval_days)
            data.references_sample = inputs.sample_note
        except Exception as exc:
            data.references_note = f"the reference models failed: {type(exc).__name__}: {exc}"
            warnings.append(data.references_note)
        timings["reference models"] = time.time() - t
    return data
