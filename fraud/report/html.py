"""The report as ONE self-contained HTML file (inline CSS, plots as inline PNG, the numbers as embedded JSON):
nine sections from the blessing decision to the run details, rendered from a ReportData."""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import time

import numpy as np

from fraud import features as F
from fraud.report import plots
from fraud.threshold import format_threshold as _t
from fraud.report.metrics import metric_config
from fraud.report.model import (ISOLATION, MIN_FRAUD_TO_JUDGE_SLICE, OP_ALERTS_PER_DAY, OP_PRECISION, OP_RECALL,
                                WEAK_RECALL_GAP, WEAK_ROC_AUC_GAP, ReportData)

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
main{max-width:1180px;margin:0 auto;padding:18px 26px 60px;background:#fff}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:30px 0 8px;border-bottom:2px solid #e4e7ec;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6472;font-size:13px}.note{color:#5b6472;font-size:12.5px;margin:4px 0 10px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}th,td{border:1px solid #dfe3e8;padding:4px 8px;
text-align:right}th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
.banner{padding:14px 18px;border-radius:6px;font-size:20px;font-weight:700;margin:14px 0 6px}
.blessed{background:#e3f4e8;color:#14632f;border:1px solid #9fd4b0}
.not-blessed{background:#fde8e6;color:#8f1d12;border:1px solid #f0a79e}
.unknown{background:#fff4d6;color:#7a5600;border:1px solid #f0d48a}
.FAILED{color:#b3261e;font-weight:700}.passed{color:#14632f}.na{color:#7a7f87}
tr.weak td{background:#fdecea}tr.few td{color:#8a9099}tr.op td{background:#e8f0fb;font-weight:600}
.pill{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11.5px}
.pill.weak{background:#f6c6c0;color:#8f1d12}.pill.few{background:#e9ebee;color:#5b6472}
.pill.ok{background:#d9f0df;color:#14632f}
.scroll{overflow-x:auto}#slice-table{font-size:12px}#slice-table td.l:last-child{min-width:90px}
img{max-width:100%;border:1px solid #eceef1;border-radius:4px}
.grid2{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
code,pre{font-family:Menlo,Consolas,monospace;font-size:12px;background:#f3f4f6;border-radius:4px}
pre{padding:10px;overflow-x:auto}code{padding:1px 4px}
.kpi{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0}.kpi div{background:#f6f8fb;border:1px solid #e4e7ec;
border-radius:6px;padding:8px 14px;min-width:150px}.kpi b{display:block;font-size:20px}
.kpi span{font-size:12px;color:#5b6472}nav a{margin-right:12px;font-size:13px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}f}"


def _pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value * 100:.{digits}f}%"


def _pen(value) -> str:
    return f"S/ {value:,.0f}"


def _cell(value, model: str, metric: str, digits: int = 4, shown: str | None = None) -> str:
    raw = "" if value is None else repr(float(value))
    text = _num(value, digits) if shown is None else shown
    return f'<td data-model="{model}" data-metric="{_e(metric)}" data-value="{raw}">{text}</td>'


_HEADLINE = (
    (F.METRIC_PR_AUC, "PR-AUC", "area under the precision-recall curve (fraud is rare: the key ranking metric)"),
    (F.METRIC_ROC_AUC, "ROC-AUC", "probability a fraud scores above a legitimate transaction"),
    (F.METRIC_RECALL_AT_1PCT_FPR, "Recall at 1% FPR", "share of fraud caught when 1% of legitimate ones are flagged"),
    (OP_PRECISION, "Precision at operating threshold", "share of alerts that are fraud"),
    (OP_RECALL, "Recall at operating threshold", "share of fraud that raises an alert"),
    (OP_ALERTS_PER_DAY, "Alerts per day at operating threshold", "eval split"),
    (F.METRIC_CARD_PRECISION, "Card precision at k",
     "share of the k highest-scored cards each day (not flagged before) that had fraud that day"),
    (F.METRIC_CALIBRATION, "Calibration", "mean score / fraud rate: 1.0 is right, below 1 under-predicts"),
    (F.METRIC_MEAN_LABEL, "Fraud rate", "share of eval transactions that are fraud"),
    (F.METRIC_EXAMPLE_COUNT, "Eval transactions", ""),
)


def _section_decision(d: ReportData) -> str:
    if d.blessed is True:
        banner = '<div class="banner blessed" id="verdict">BLESSED: the candidate passed every threshold</div>'
    elif d.blessed is False:
        rules = [r.rule for r in d.decision if r.status == "FAILED"]
        if d.reference_gate is not None and not d.reference_gate.passed:
            rules.append("the reference gate (" + d.reference_gate.reason + ")")
        banner = ('<div class="banner not-blessed" id="verdict">NOT BLESSED: failed '
                  + _e("; ".join(rules) or "a threshold") + " &middot; the model was not pushed</div>")
    else:
        failed = [n for n in d.nodes.values() if n.state == "FAILED"]
        why = f"the pipeline failed in {failed[0].node_id}" if failed else "the Evaluator did not run"
        banner = f'<div class="banner unknown" id="verdict">NOT EVALUATED: {_e(why)}; nothing was pushed</div>'
    out = ['<section id="decision"><h2>1. Decision</h2>', banner]
    if d.pushed.get("pushed"):
        out.append(f'<p class="sub">Pushed as version <code>{_e(d.pushed.get("pushed_version"))}</code> to '
                   f'<code>{_e(d.pushed.get("pushed_destination"))}</code>.</p>')
    elif d.blessed is not None:
        out.append('<p class="sub">Not pushed.</p>')
    if d.decision:
        out.append('<table id="thresholds"><tr><th class="l">threshold (overall eval slice)</th><th>bound</th>'
                   '<th>candidate</th><th>baseline</th><th>margin</th><th class="l">result</th></tr>')
        for r in d.decision:
            cls = {"FAILED": "FAILED", "passed": "passed"}.get(r.status, "na")
            diff = None if r.candidate is None or r.baseline is None else r.candidate - r.baseline
            margin_note = "" if r.kind == "value" else f' title="candidate - baseline = {_num(diff)}"'
            out.append(f'<tr data-threshold="{_e(r.metric)}:{r.kind}" data-status="{r.status}"><td class="l">'
                       f'{_e(r.rule)}</td><td>{r.bound:g}</td>{_cell(r.candidate, F.CANDIDATE, r.metric)}'
                       f'{_cell(r.baseline, F.BASELINE, r.metric)}<td{margin_note}>{_num(r.margin)}</td>'
                       f'<td class="l {cls}">{_e(r.status)}</td></tr>')
        out.append("</table>")
        out.append('<p class="note">Margin: how far the candidate is on the passing side of the bound (value '
                   'thresholds: value - bound; change thresholds: (candidate - baseline) - bound). Negative means '
                   'failed. Pass/fail is TFMA\'s validation result; change thresholds are not applied when there is '
                   'no blessed baseline yet (first run).</p>')
    for failure in d.failed_thresholds:
        out.append(f'<p class="FAILED failure">Failed: {_e(failure)}</p>')
    out.append(_reference_gate(d))
    out.append("</section>")
    return "\n".join(out)


def _reference_gate(d: ReportData) -> str:
    """The reference gate's verdict and its models (section 1), or why there is none."""
    g = d.reference_gate
    if g is None:
        if not d.reference_gate_note or d.evaluation is None:
            return ""
        return (f'<p class="FAILED" id="reference-gate">Reference gate: no result ({_e(d.reference_gate_note)}); '
                'a model is pushed only when the gate passes.</p>')
    status = "passed" if g.passed else "FAILED"
    out = [f'<h3>Reference gate</h3><p id="reference-gate" data-status="{status}" class="{status}">'
           f'{_e(g.reason[0].upper() + g.reason[1:])}.</p>',
           '<table id="reference-gate-table"><tr><th class="l">model (same train split and inputs)</th>'
           '<th>PR-AUC</th><th>ROC-AUC</th><th>recall @1% FPR</th><th>card precision @k</th><th>seconds</th>'
           '<th class="l">how it was trained</th></tr>']
    c = g.candidate
    out.append(f'<tr class="op"><td class="l">candidate (TFMA)</td><td>{_num(c.get(F.METRIC_PR_AUC))}</td>'
               f'<td>{_num(c.get(F.METRIC_ROC_AUC))}</td><td>{_num(c.get(F.METRIC_RECALL_AT_1PCT_FPR))}</td>'
               f'<td>{_num(c.get(F.METRIC_CARD_PRECISION))}</td><td>&ndash;</td><td class="l">the Trainer</td></tr>')
    for r in g.references:
        if r.error:
            out.append(f'<tr data-gate-reference="{_e(r.name)}" data-status="FAILED"><td class="l">{_e(r.name)}'
                       f'</td><td colspan="4" class="FAILED">FAILED: {_e(r.error)}</td><td>{r.seconds:.1f}</td>'
                       '<td class="l"></td></tr>')
            continue
        m = r.metrics
        out.append(f'<tr data-gate-reference="{_e(r.name)}"><td class="l">{_e(r.name)}</td>'
                   f'<td>{_num(m.get(F.METRIC_PR_AUC))}</td><td>{_num(m.get(F.METRIC_ROC_AUC))}</td>'
                   f'<td>{_num(m.get(F.METRIC_RECALL_AT_1PCT_FPR))}</td><td>{_num(m.get(F.METRIC_CARD_PRECISION))}'
                   f'</td><td>{r.seconds:.1f}</td><td class="l">{_e(r.detail)}</td></tr>')
    out.append("</table>")
    out.append(f'<p class="note">The references are trained on all {g.train_rows:,} train rows ({g.train_fraud:,} '
               f'fraud) of the behavioural examples, raw values (no vocabulary cut-off), and scored on the same '
               f'{g.eval_rows:,} eval rows with the Evaluator\'s metric code. The candidate is blessed only if its '
               f'PR-AUC is at least the best reference\'s minus {g.tolerance:g} (--reference-tolerance) and the '
               'Evaluator blessed it.</p>')
    return "\n".join(out)


def _section_headline(d: ReportData) -> str:
    c, b = d.candidate, d.baseline
    op = d.operating
    out = ['<section id="headline"><h2>2. Headline metrics: candidate vs baseline</h2>']
    if op is not None:
        out.append('<div class="kpi">'
                   f'<div><span>operating threshold</span><b>{_t(op.threshold)}</b>'
                   f'<span>budget {op.alerts_per_day_budget:g} alerts/day</span></div>'
                   f'<div><span>fraud caught (recall)</span><b>{_pct(c.get(OP_RECALL))}</b>'
                   '<span>eval split</span></div>'
                   f'<div><span>alerts that are fraud</span><b>{_pct(c.get(OP_PRECISION))}</b>'
                   f'<span>precision</span></div>'
                   f'<div><span>alerts per day</span><b>{_num(c.get(OP_ALERTS_PER_DAY), 1)}</b>'
                   f'<span>eval, {d.eval_days} days</span></div></div>')
    if not d.has_baseline:
        out.append('<p class="note">No baseline: this is the first model evaluated in this pipeline root (no '
                   'blessed model before it), so there is nothing to compare against yet.</p>')
    out.append('<table id="headline-table"><tr><th class="l">metric</th><th>candidate</th><th>baseline</th>'
               '<th>candidate - baseline</th><th class="l">meaning</th></tr>')
    for key, label, meaning in _HEADLINE:
        cv, bv = c.get(key), b.get(key)
        if cv is None and bv is None and key == F.METRIC_CARD_PRECISION:
            continue  # a run evaluated before the metric existed
        if key == F.METRIC_CARD_PRECISION and d.evaluation is not None:
            k = metric_config(d.evaluation.eval_config, F.METRIC_CARD_PRECISION).get("k")
            label = f"Card precision at k={k}" if k else label
        digits = 0 if key == F.METRIC_EXAMPLE_COUNT else (1 if key == OP_ALERTS_PER_DAY else 4)
        diff = None if cv is None or bv is None else cv - bv
        out.append(f'<tr><td class="l">{_e(label)}</td>{_cell(cv, F.CANDIDATE, key, digits)}'
                   f'{_cell(bv, F.BASELINE, key, digits)}<td>{_num(diff, digits)}</td>'
                   f'<td class="l note">{_e(meaning)}</td></tr>')
    out.append("</table>")
    if op is not None and d.baseline_operating is not None and d.has_baseline:
        out.append(f'<p class="note">Baseline at its own operating threshold '
                   f'{_t(d.baseline_operating.threshold)} ({_e(d.baseline_operating_source)}).</p>')
    if op is not None:
        out.append(f'<p class="note">One threshold: the Evaluator ran TFMA at the threshold recorded with the model '
                   f'({_t(op.threshold)}); TFMA\'s <code>precision</code> / <code>recall</code> there: '
                   f'{_num(c.get(F.METRIC_PRECISION))} / {_num(c.get(F.METRIC_RECALL))}. The operating-threshold '
                   'rows above are TFMA\'s exact confusion matrix at that threshold; the model server, the decision '
                   'service and <code>fraudctl score</code> read the same record.</p>')
    if d.recompute_max_diff is not None:
        out.append(f'<p class="note" id="recompute">Check: scoring the eval split with the candidate SavedModel '
                   f'and running TFMA\'s metric code on those scores reproduces the stored TFMA metrics (largest '
                   f'difference {d.recompute_max_diff:.2g}).</p>')
    out.append("</section>")
    return "\n".join(out)


def _source_html(source: str) -> str:
    if source.endswith(".json"):
        return (f"Recorded with the model in <code>{_e(source)}</code>; the pushed model carries the same file, "
                "so serving and this report use the same number.")
    return _e(source[:1].upper() + source[1:]) + "."


def _budget_note(op) -> str:
    if op.budget_reached:
        return ""
    return (f' <b>Budget not reached</b>: the split has only {op.split_rows:,} transactions, no more '
            'than the budget allows, so every transaction with a score above 0 alerts.')


def _section_threshold(d: ReportData) -> str:
    op = d.operating
    if op is None:
        return ""
    eval_row = next((r for r in d.alert_table if r["operating"]), None)
    return f"""<section id="operating-threshold"><h2>3. Operating threshold from the alert budget</h2>
<p>A transaction raises an alert when its fraud score is above <b>{_t(op.threshold)}</b>. The pipeline chose the
lowest threshold (among the split's own scores, so small scores are resolved) that keeps alerts within
<b>{op.alerts_per_day_budget:g} per day</b> on the <b>{_e(op.split)}</b> split: {op.split_alerts:,} alerts over
{op.split_days} days ({op.split_alerts_per_day:.1f}/day, {op.split_rows:,} transactions).{_budget_note(op)} On the
eval split, which the choice never saw, it gives
<b>{_num(eval_row['alerts_per_day'] if eval_row else None, 1)} alerts/day</b>.</p>
<p class="note">{_source_html(d.operating_source)}</p>
<p class="note">Why the valid split and not eval: the choice only uses scores, never labels, so choosing on eval
would not leak fraud labels, but it would make "eval alerts/day &le; budget" true by construction. Choosing on the
days just before eval keeps the eval week an honest check that the budget holds on unseen days (traffic changes
from week to week), and keeps every decision about the model out of the data that judges it.</p></section>"""


def _section_plots(d: ReportData) -> str:
    if d.evaluation is None:
        return ""
    out = ['<section id="plots"><h2>4. Curves, calibration and score distribution</h2>',
           '<img id="plot-pr-roc" alt="precision-recall and ROC curves" '
           f'src="data:image/png;base64,{plots.plot_pr_roc(d)}">',
           '<div class="grid2">',
           f'<img id="plot-calibration" alt="calibration plot" style="width:48%" '
           f'src="data:image/png;base64,{plots.plot_calibration(d)}">']
    if d.eval_frame is not None:
        out.append(f'<img id="plot-scores" alt="score distribution" style="width:48%" '
                   f'src="data:image/png;base64,{plots.plot_score_distribution(d)}">')
    out.append("</div>")
    out.append('<p class="note">Calibration: each dot is a bucket of transactions with similar scores; on the '
               'diagonal the score is the real fraud probability. Score distribution: each class sums to 100%; '
               'good separation means little red left of the threshold and little green right of it.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_alerts(d: ReportData) -> str:
    if not d.alert_table:
        return ""
    out = ['<section id="alert-budget"><h2>5. Alert budget: what each threshold costs and catches</h2>',
           f'<p class="note">Thresholds chosen on the {_e(d.operating.split)} split for each daily budget (the same '
           f'rule as the operating threshold); the results are on the eval split ({d.eval_days} days). Amounts '
           f'are fraudulent charges in PEN (USD at {F.USD_TO_PEN} PEN). The highlighted row is the operating '
           'threshold. Budgets that land on the same threshold share a row.</p>',
           '<table id="alert-table"><tr><th>budget (alerts/day)</th><th>threshold</th><th>alerts/day</th>'
           '<th>false alarms/day</th><th>precision</th><th>recall</th><th>fraud caught (PEN)</th>'
           '<th>fraud missed (PEN)</th><th>share of fraud PEN caught</th></tr>']
    for r in d.alert_table:
        out.append(f'<tr class="{"op" if r["operating"] else ""}" data-threshold="{r["threshold"]}">'
                   f'<td>{", ".join(f"{b:g}" for b in r["budgets"])}</td><td>{_t(r["threshold"])}</td>'
                   f'<td>{r["alerts_per_day"]:.1f}</td>'
                   f'<td>{r["false_alarms_per_day"]:.1f}</td><td>{_pct(r["precision"])}</td>'
                   f'<td>{_pct(r["recall"])}</td><td>{_pen(r["pen_caught"])}</td><td>{_pen(r["pen_missed"])}</td>'
                   f'<td>{_pct(r["pen_caught_share"])}</td></tr>')
    out.append("</table>")
    out.append('<p class="note">At the operating threshold, alert counts, precision and recall are TFMA\'s exact '
               'confusion matrix; at the other budgets\' thresholds they are counted from the per-row scores with '
               'the same rule (score &gt; threshold). PEN amounts add up the same flagged transactions.</p></section>')
    return "\n".join(out)


def _section_slices(d: ReportData) -> str:
    if not d.slices:
        return ""
    weak = [r for r in d.slices if r["status"] == "weak"]
    out = ['<section id="slices"><h2>6. Metrics per slice (eval split)</h2>',
           f'<p class="note">A slice is <span class="pill weak">weak</span> when it has at least '
           f'{MIN_FRAUD_TO_JUDGE_SLICE} fraud cases and it catches a share of its fraud at the operating threshold '
           f'more than {WEAK_RECALL_GAP:.0%} points below the overall model, or its ROC-AUC is more than '
           f'{WEAK_ROC_AUC_GAP:.2f} below. PR-AUC is shown but not judged: it falls with the slice\'s fraud rate '
           'even when the model is as good. Slices with fewer fraud cases are greyed: too few to judge. '
           'Precision/recall at the operating threshold come from TFMA\'s per-slice confusion matrices.</p>',
           f'<p id="weak-summary"><b>{len(weak)} weak slice(s)</b>'
           + (": " + _e(", ".join(r["slice"] for r in weak)) if weak else "") + "</p>",
           '<div class="scroll"><table id="slice-table"><tr><th class="l">slice</th><th>transactions</th><th>fraud</th>'
           '<th>fraud rate</th><th>PR-AUC</th><th>ROC-AUC</th><th>recall @1% FPR</th><th>precision @op</th>'
           '<th>recall @op</th><th>alerts/day @op</th><th>calibration</th>'
           + ('<th>baseline PR-AUC</th><th>baseline recall @op</th>' if d.has_baseline else "")
           + '<th class="l">assessment</th></tr>']
    for r in d.slices:
        pill = {"weak": "weak", "few": "few"}.get(r["status"], "ok")
        label = {"weak": "weak", "few": "too few"}.get(r["status"], "ok")
        out.append(
            f'<tr class="{r["status"]}" data-slice="{_e(r["slice"])}"><td class="l">{_e(r["slice"])}</td>'
            f'<td>{r["examples"]:,.0f}</td><td>{r["fraud"]:,}</td><td>{_pct(r["fraud_rate"], 2)}</td>'
            # With no fraud in a slice TFMA reports 0 for the AUCs: undefined, shown as a dash.
            f'{_cell(r["pr_auc"], F.CANDIDATE, F.METRIC_PR_AUC, shown=None if r["fraud"] else "&ndash;")}'
            f'{_cell(r["roc_auc"], F.CANDIDATE, F.METRIC_ROC_AUC, shown=None if r["fraud"] else "&ndash;")}'
            f'{_cell(r["recall_at_1pct_fpr"], F.CANDIDATE, F.METRIC_RECALL_AT_1PCT_FPR, 3)}'
            f'<td>{_pct(r["precision_at_op"])}</td><td>{_pct(r["recall_at_op"])}</td>'
            f'<td>{_num(r["alerts_per_day"], 1)}</td><td>{_num(r["calibration"], 2)}</td>'
            + (f'<td>{_num(r["baseline_pr_auc"]) if r["fraud"] else "&ndash;"}</td>'
               f'<td>{_pct(r["baseline_recall_at_op"])}</td>'
               if d.has_baseline else "")
            + f'<td class="l" title="{_e(r["why"])}"><span class="pill {pill}">{label}</span>'
            + (f' {_e(r["why"])}' if r["status"] == "weak" else "") + '</td></tr>')
    out.append("</table></div></section>")
    return "\n".join(out)


def _section_data(d: ReportData) -> str:
    out = ['<section id="data"><h2>7. The data behind it</h2><h3>Rows and fraud rate per split (time split)</h3>',
           '<table id="split-table"><tr><th class="l">split</th><th>days</th><th>transactions</th><th>fraud</th>'
           '<th>fraud rate</th><th class="l">used for</th></tr>']
    use = {F.SPLIT_TRAIN: "training", F.SPLIT_VALID: "early stopping, operating threshold",
           F.SPLIT_EVAL: "evaluation and blessing (this report)"}
    for split, v in d.splits.items():
        out.append(f'<tr data-split="{split}"><td class="l">{split}</td><td>{v["days"] or "&ndash;"}</td>'
                   f'<td>{v["rows"]:,}</td><td>{v["fraud"]:,}</td><td>{_pct(v["fraud_rate"], 2)}</td>'
                   f'<td class="l">{use.get(split, "")}</td></tr>')
    out.append("</table><h3>Validation anomalies</h3>")
    if d.anomalies is None:
        out.append('<p id="anomalies">Not checked (the validation components did not run).</p>')
    elif not d.anomalies:
        out.append('<p id="anomalies">None: every split matches the schema and no input that stops the pipeline '
                   'has drifted beyond its limit (drift warnings, if any, are below).</p>')
    else:
        out.append('<ul id="anomalies">' + "".join(f"<li>{_e(a)}</li>" for a in d.anomalies) + "</ul>")
    out.append("<h3>Top feature drifts: train vs eval</h3>")
    if d.drifts:
        over = [r for r in d.drifts if r["over_limit"] and not r["blocks"]]
        out.append('<p class="note">Measured by TensorFlow Data Validation on the StatisticsGen statistics: '
                   'L-infinity distance between value shares (categorical) or Jensen-Shannon divergence (numeric). '
                   '0 means identical distributions. Every model input has a limit in the schema; crossing it stops '
                   'the pipeline for the raw inputs marked "stops", and is a warning for the others (behavioural '
                   'features move between train and eval by construction, so they are watched, not gated). Every '
                   'input over its limit is listed.</p>')
        if over:
            out.append('<p id="drift-warnings"><b>Over their limit (warnings):</b> '
                       + ", ".join(f'{_e(r["feature"])} {r["value"]:.3f} &gt; {r["limit"]:g}' for r in over)
                       + "</p>")
        out.append('<table id="drift-table"><tr><th class="l">feature</th><th class="l">measure</th><th>drift</th>'
                   '<th>limit</th><th class="l">crossing it</th><th class="l">what moved</th></tr>')
        for r in d.drifts:
            limit = f'{r["limit"]:g}' if r["limit"] is not None else "&ndash;"
            effect = ("&ndash;" if r["limit"] is None else "stops the pipeline" if r["blocks"] else "warns")
            value = f'<b>{r["value"]:.4f}</b>' if r["over_limit"] else f'{r["value"]:.4f}'
            out.append(f'<tr data-feature="{_e(r["feature"])}" data-over="{int(r["over_limit"])}">'
                       f'<td class="l">{_e(r["feature"])}</td><td class="l">{_e(r["measure"])}</td>'
                       f'<td>{value}</td><td>{limit}</td><td class="l">{effect}</td>'
                       f'<td class="l">{_e(r["detail"])}</td></tr>')
        out.append("</table>")
    else:
        out.append('<p id="drift-table">No statistics to compare.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_references(d: ReportData) -> str:
    if d.evaluation is None:
        return ""
    out = ['<section id="reference-models"><h2>8. Reference models on the same rows and features</h2>',
           '<p class="note">Simple scikit-learn models on the same rows and the same features as the candidate: '
           'the run\'s Transform graph applied to its examples (the features the Trainer fed the Keras model: the '
           'dense <code>*_xf</code> features as Transform imputed and scaled them, the categorical vocabulary ids '
           'one-hot encoded). Trained on the train split, thresholded for the same alert budget on the valid '
           'split, and scored on the eval examples (as TFMA scores the candidate, each row keeping its card and '
           'day) with the '
           'run\'s TFMA metric code. The gap to the candidate is what the deep model adds on the same inputs.</p>']
    if not d.references:
        why = f": {_e(d.references_note)}" if d.references_note else ""
        out.append(f'<p id="references-not-computed">Not computed{why}.</p></section>')
        return "\n".join(out)
    if d.references_sample:
        out.append(f'<p id="references-sample">The reference models were {_e(d.references_sample)}.</p>')
    out.append('<table id="reference-table"><tr><th class="l">model</th><th>PR-AUC</th><th>ROC-AUC</th>'
               '<th>recall @1% FPR</th><th>card precision @k</th><th>threshold</th><th>precision @budget</th>'
               '<th>recall @budget</th><th>alerts/day</th><th>calibration</th><th>seconds</th></tr>')
    c = d.candidate
    out.append(f'<tr class="op"><td class="l">candidate (TFMA)</td>'
               f'{_cell(c.get(F.METRIC_PR_AUC), F.CANDIDATE, F.METRIC_PR_AUC)}'
               f'{_cell(c.get(F.METRIC_ROC_AUC), F.CANDIDATE, F.METRIC_ROC_AUC)}'
               f'{_cell(c.get(F.METRIC_RECALL_AT_1PCT_FPR), F.CANDIDATE, F.METRIC_RECALL_AT_1PCT_FPR)}'
               f'{_cell(c.get(F.METRIC_CARD_PRECISION), F.CANDIDATE, F.METRIC_CARD_PRECISION)}'
               f'<td>{_num(d.operating.threshold if d.operating else None, 3)}</td><td>{_pct(c.get(OP_PRECISION))}</td>'
               f'<td>{_pct(c.get(OP_RECALL))}</td><td>{_num(c.get(OP_ALERTS_PER_DAY), 1)}</td>'
               f'<td>{_num(c.get(F.METRIC_CALIBRATION), 2)}</td><td>&ndash;</td></tr>')
    for r in d.references:
        m = r.metrics
        calibration = "n/a" if r.name == ISOLATION else _num(m.get(F.METRIC_CALIBRATION), 2)
        out.append(f'<tr data-reference="{_e(r.name)}"><td class="l">{_e(r.name)}</td>'
                   f'{_cell(m.get(F.METRIC_PR_AUC), r.name, F.METRIC_PR_AUC)}'
                   f'{_cell(m.get(F.METRIC_ROC_AUC), r.name, F.METRIC_ROC_AUC)}'
                   f'{_cell(m.get(F.METRIC_RECALL_AT_1PCT_FPR), r.name, F.METRIC_RECALL_AT_1PCT_FPR)}'
                   f'{_cell(m.get(F.METRIC_CARD_PRECISION), r.name, F.METRIC_CARD_PRECISION)}'
                   f'<td>{_t(r.threshold)}</td><td>{_pct(m.get(OP_PRECISION))}</td><td>{_pct(m.get(OP_RECALL))}</td>'
                   f'<td>{_num(m.get(OP_ALERTS_PER_DAY), 1)}</td><td>{calibration}</td><td>{r.seconds:.1f}</td></tr>')
    out.append("</table>")
    for r in d.references:
        if r.note:
            out.append(f'<p class="note">{_e(r.name)}: {_e(r.note)}.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_run(d: ReportData) -> str:
    rows = "".join(f'<tr><td class="l">{_e(n.node_id)}</td><td class="l">{_e(n.state)}</td><td>{n.seconds:.1f}</td>'
                   f'<td class="l">{_e(n.error[:300])}</td></tr>' for n in d.nodes.values())
    uri = d.evaluation.uri if d.evaluation else "<evaluation dir>"
    model_arg = f', model_name="{F.CANDIDATE}"' if d.has_baseline else ""
    notebook = (f'import tensorflow_model_analysis as tfma\n'
                f'result = tfma.load_eval_result("{uri}"{model_arg})\n'
                f'tfma.view.render_slicing_metrics(result, slicing_column="{F.CITY}")\n'
                f'tfma.view.render_plot(result, tfma.SlicingSpec())  # overall slice')
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in d.timings.items())
    warnings = "".join(f'<p class="note FAILED">{_e(w)}</p>' for w in d.warnings)
    return f"""<section id="run"><h2>9. Run details and the TFMA result in a notebook</h2>
<table><tr><th class="l">component</th><th class="l">state</th><th>seconds</th><th class="l">error</th></tr>
{rows}</table>
<p class="note">To explore the TFMA result interactively (Jupyter with the TFMA widgets):</p>
<pre id="notebook">{_e(notebook)}</pre>
<p class="note">Built from ML Metadata at <code>{_e(os.path.join(d.root, F.METADATA_FILE))}</code>
({_e(timings)}).</p>
{warnings}</section>"""


def report_json(d: ReportData) -> dict:
    """The numbers of the report in machine-readable form (embedded in the HTML, used by tests)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        return v

    op = dataclasses.asdict(d.operating) if d.operating else None
    return {
        "run_id": d.run_id, "pipeline_name": d.pipeline_name, "blessed": d.blessed,
        "failed_thresholds": d.failed_thresholds, "eval_uri": d.evaluation.uri if d.evaluation else None,
        "decision": [{k: clean(v) for k, v in dataclasses.asdict(r).items()} for r in d.decision],
        "candidate": {k: clean(v) for k, v in d.candidate.items()},
        "baseline": {k: clean(v) for k, v in d.baseline.items()},
        "operating_threshold": op, "operating_threshold_source": d.operating_source,
        "alert_table": [{k: clean(v) for k, v in r.items()} for r in d.alert_table],
        "slices": [{k: clean(v) for k, v in r.items()} for r in d.slices],
        "splits": d.splits, "anomalies": d.anomalies, "drifts": d.drifts,
        "references": [{"name": r.name, "threshold": r.threshold, "seconds": r.seconds,
                        "metrics": {k: clean(v) for k, v in r.metrics.items()}} for r in d.references],
        "references_note": d.references_note, "references_sample": d.references_sample,
        "reference_gate": json.loads(d.reference_gate.to_json()) if d.reference_gate is not None else None,
        "reference_gate_note": d.reference_gate_note,
        "recompute_max_diff": d.recompute_max_diff, "timings": d.timings,
    }


def render_html(d: ReportData) -> str:
    title = f"Fraud model evaluation: run {d.run_id}"
    verdict = {True: "blessed", False: "NOT blessed", None: "not evaluated"}[d.blessed]
    payload = json.dumps(report_json(d), default=str).replace("</", "<\\/")
    body = "\n".join([
        _section_decision(d), _section_headline(d), _section_threshold(d), _section_plots(d), _section_alerts(d),
        _section_slices(d), _section_data(d), _section_references(d), _section_run(d)])
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("decision", "Decision"), ("headline", "Metrics"), ("operating-threshold", "Threshold"), ("plots", "Plots"),
        ("alert-budget", "Alert budget"), ("slices", "Slices"), ("data", "Data"),
        ("reference-models", "Reference models"), ("run", "Run")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Fraud detection model: evaluation report</h1>
<p class="sub">Pipeline <code>{_e(d.pipeline_name)}</code> &middot; run <code>{_e(d.run_id)}</code> &middot;
model {verdict} &middot; generated {time.strftime("%Y-%m-%d %H:%M:%S")} &middot; pipeline root
<code>{_e(d.root)}</code></p>
<nav>{nav}</nav>
{body}
<script type="application/json" id="report-data">{payload}</script>
</main></body></html>
"""
