"""A second shape of data, unlike the generator's: a payment processor's terminal export.

Only the contract's required columns, the label and `restaurant_id` (the terminal), in time order, as an export
comes. The only fraud signal is terminal compromise: a terminal taken over for 25-40 days, `compromised_share` of
its payments fraud meanwhile, against `base_rate` elsewhere. Amounts, hours and cards carry nothing, so a model
can only see fraud through the terminals' delayed fraud rates (labels at least the label delay old): the first
week of every compromise is invisible, and the first week of data has no known label at all. Used by the tests
of training and the reference gate, and by the measurements in docs/scale.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fraud import features as F

T0 = 1_780_000_000  # 2026-05-28 UTC


def terminal_export(out: Path, *, days: int = 75, rows: int = 40_000, terminals: int = 200, cards: int = 3_000,
                    compromised_terminals: float = 0.15, compromised_share: float = 0.3, base_rate: float = 0.003,
                    seed: int = 11) -> Path:
    """Write `out`/terminals.csv (creating `out`) and return `out`."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(T0, T0 + days * F.DAY_S, rows))
    terminal = rng.integers(0, terminals, rows)
    start = rng.integers(0, max(days - 20, 1), terminals) * F.DAY_S + T0
    length = rng.integers(25, 41, terminals) * F.DAY_S
    compromised = rng.random(terminals) < compromised_terminals
    inside = compromised[terminal] & (times >= start[terminal]) & (times < start[terminal] + length[terminal])
    label = (rng.random(rows) < np.where(inside, compromised_share, base_rate)).astype(int)
    frame = pd.DataFrame({
        F.TRANSACTION_ID: [f"tx{i:08d}" for i in range(rows)], F.TIMESTAMP: times.astype(str),
        F.AMOUNT: np.round(rng.lognormal(5.0, 0.7, rows), 2).astype(str),
        F.USER_ID: [f"card{c}" for c in rng.integers(0, cards, rows)],
        F.RESTAURANT_ID: [f"term{t:05d}" for t in terminal], F.LABEL: label.astype(str)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "terminals.csv", index=False)
    return out


if __name__ == "__main__":  # python -m fraud.synth.terminals OUT [--rows N] [--terminals N] ...
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    for name, default in (("days", 75), ("rows", 40_000), ("terminals", 200), ("cards", 3_000), ("seed", 11)):
        parser.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("compromised-terminals", 0.15), ("compromised-share", 0.3), ("base-rate", 0.003)):
        parser.add_argument(f"--{name}", type=float, default=default)
    args = vars(parser.parse_args())
    print(terminal_export(args.pop("out"), **args))
