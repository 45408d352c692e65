"""The report's plots (matplotlib, Agg backend), each returned as a base64 PNG to inline in the HTML: PR and ROC
curves (candidate, baseline, reference models), calibration with 95% intervals, and the score distribution."""
from __future__ import annotations

import base64
import io

import numpy as np

from fraud import features as F
from fraud.report.model import FOREST, ISOLATION, LOGISTIC, Curves, ReportData
from fraud.threshold import format_threshold

_COLORS = {F.CANDIDATE: "#1f5fa8", F.BASELINE: "#8a8a8a", LOGISTIC: "#d08c1d", FOREST: "#2f8f46",
           ISOLATION: "#a33b8f"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_sets(data: ReportData) -> list[tuple[str, Curves, float | None, str]]:
    ev = data.evaluation
    sets = []
    # Drawn in this order: the candidate last, on top (it hides an identical baseline, not the reverse).
    baseline = ev.curves.get("", {}).get(F.BASELINE)
    if baseline is not None:
        sets.append((F.BASELINE, baseline, data.baseline_operating.threshold if data.baseline_operating else None, "-"))
    for ref in data.references:
        if ref.curves is not None:
            sets.append((ref.name, ref.curves, ref.threshold, "--"))
    candidate = ev.curves.get("", {}).get(F.CANDIDATE)
    if candidate is not None:
        sets.append((F.CANDIDATE, candidate, data.operating.threshold if data.operating else None, "-"))
    return sets


def plot_pr_roc(data: ReportData) -> str:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for name, c, op, style in _curve_sets(data):
        keep = (c.tp + c.fp) > 0
        recall = c.tp / np.maximum(c.tp + c.fn, 1)
        precision = np.where(keep, c.tp / np.maximum(c.tp + c.fp, 1), np.nan)
        fpr = c.fp / np.maximum(c.fp + c.tn, 1)
        width = 2.2 if style == "-" else 1.2
        color = _COLORS.get(name, None)
        ax1.plot(recall[keep], precision[keep], style, color=color, lw=width, label=name)
        ax2.plot(np.maximum(fpr, 1e-5), recall, style, color=color, lw=width, label=name)
        at = c.at(op) if op is not None else None
        if at and name in (F.CANDIDATE, F.BASELINE):
            fp_rate = at["fp"] / max(at["fp"] + at["tn"], 1)
            ax1.plot([at["recall"]], [at["precision"]], "o", color=color, ms=8)
            ax2.plot([max(fp_rate, 1e-5)], [at["recall"]], "o", color=color, ms=8)
    ax1.set(xlabel="recall (share of fraud caught)", ylabel="precision (share of alerts that are fraud)",
            title="Precision-recall (eval split)", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set_xscale("log")
    ax2.axvline(0.01, color="#c33", lw=0.8, ls=":")
    ax2.text(0.0105, 0.03, "1% FPR", color="#c33", fontsize=8)
    ax2.set(xlabel="false positive rate (log scale)", ylabel="recall", title="ROC (eval split)",
            xlim=(1e-5, 1), ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower left")
    fig.text(0.5, -0.02, "Dots: the operating threshold. Candidate and baseline curves are TFMA's confusion-matrix "
             "plots; reference models use the same TFMA code on their scores.", ha="center", fontsize=8)
    return _png(fig)


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson interval of an observed rate k/n (honest for small buckets and rates near 0 or 1)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def plot_calibration(data: ReportData) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    ax.plot([0, 1], [0, 1], ":", color="#666", lw=1, label="perfect calibration")
    for model, shift in ((F.BASELINE, 0.006), (F.CANDIDATE, 0.0)):  # candidate on top
        c = data.evaluation.curves.get("", {}).get(model)
        if c is None:
            continue
        pts = [(p / n, l, n) for _, _, n, l, p in c.calibration if n > 0]
        if not pts:
            continue
        x, k, n = map(np.array, zip(*pts))
        y = k / n
        lo, hi = _wilson(k, n)
        color = _COLORS[model]
        ax.errorbar(x + shift, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="none", ecolor=color,
                    alpha=0.45, lw=1)
        big = n >= 20
        ax.scatter(x[big] + shift, y[big], s=28, color=color, label=f"{model} (TFMA calibration plot)", zorder=3)
        ax.scatter(x[~big] + shift, y[~big], s=28, facecolors="white", edgecolors=color, zorder=3,
                   label=f"{model}: bucket with < 20 transactions")
    ax.set(xlabel="mean predicted fraud probability (bucket)", ylabel="observed fraud rate (bucket)",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="Calibration (eval split, TFMA's 20 buckets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.text(0.5, -0.04, "Bars: 95% interval of the observed rate; small buckets are uncertain.", ha="center",
             fontsize=8)
    return _png(fig)


SCORE_BINS = np.logspace(-4, 0, 41)  # the score distribution's bins (log scale, 1e-4 .. 1)


def score_shares(scores) -> np.ndarray:
    """Each SCORE_BINS bin's share of `scores`, adding up to 1: a score below the first edge counts in the first
    bin. The clip is done in float64: a float32 score clipped to 1e-4 is 9.99999974e-05, below the float64 edge,
    and np.histogram drops it (that hid 89% of the demo's legitimate rows)."""
    values = np.clip(np.asarray(scores, dtype=np.float64), SCORE_BINS[0], SCORE_BINS[-1])
    counts, _ = np.histogram(values, bins=SCORE_BINS)
    return counts / max(len(values), 1)


def plot_score_distribution(data: ReportData) -> str:
    plt = _pyplot()
    frame = data.eval_frame
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, name, color in ((0, "legitimate", "#2f8f46"), (1, "fraudulent", "#c0392b")):
        s = frame.loc[frame["label"] == label, "score"].to_numpy()
        if len(s):
            ax.stairs(score_shares(s), SCORE_BINS, fill=True, alpha=0.45, color=color,
                      label=f"{name} ({len(s):,})")
    ax.axvline(data.operating.threshold, color="#1f5fa8", lw=1.5, ls="--",
               label=f"operating threshold {format_threshold(data.operating.threshold)}")
    ax.set_xscale("log")
    ax.set(xlabel="candidate fraud score (log scale; scores < 0.0001 shown at 0.0001)",
           ylabel="share of the class", title="Score distribution on eval: fraud vs legitimate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
