"""Probability-forecast metrics and isotonic calibration, in plain numpy.

AUC (rank form of Mann-Whitney U, ties averaged), log loss, Brier score and the Brier skill
score over a reference forecast (climatology), a reliability table, precision at the strategy's
entry thresholds, and pool-adjacent-violators isotonic regression for calibrating raw model
probabilities (the strategy acts on thresholds like 0.65, so a model whose 0.7 means 0.55
would trade on a lie).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
EPS = 1e-15


def auc(y: Array, p: Array) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_p)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(p)]))
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: Array, p: Array) -> float:
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(y: Array, p: Array) -> float:
    return float(np.mean((p - y) ** 2))


def brier_skill(model_brier: float, reference_brier: float) -> float:
    """Brier skill score ``1 - model / reference`` (0: no better than the reference, e.g.
    climatology; 1: perfect). A reference of 0 (it was never wrong) leaves no room for skill:
    0 for a model that is never wrong either, else -inf."""
    if reference_brier == 0:
        return 0.0 if model_brier == 0 else float("-inf")
    return 1.0 - model_brier / reference_brier


def reliability(y: Array, p: Array, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin: mean predicted, observed frequency, count (empty bins omitted)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            table.append(
                {
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "predicted": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return table


def precision_at(y: Array, p: Array, buy: float, sell: float) -> dict[str, float]:
    """How often an entry signal would have been right: up-moves among p > buy, and the
    absence of an up-move among p < sell; NaN where no signal fired."""
    up, down = p > buy, p < sell
    return {
        "buy_signals": int(up.sum()),
        "buy_precision": float(y[up].mean()) if up.any() else float("nan"),
        "sell_signals": int(down.sum()),
        "sell_precision": float(1 - y[down].mean()) if down.any() else float("nan"),
    }


def evaluate(y: Array, p: Array, buy: float, sell: float) -> dict[str, Any]:
    return {
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "base_rate": float(y.mean()),
        "rows": len(y),
        "reliability": reliability(y, p),
        **precision_at(y, p, buy, sell),
    }


def isotonic_fit(
    p: Array, y: Array, max_points: int = 200
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Non-decreasing fit of y on p (pool adjacent violators); returns breakpoints for linear
    interpolation, thinned to at most ``max_points``."""
    order = np.argsort(p, kind="mergesort")
    xs, ys = p[order], y[order].astype(np.float64)
    values: list[float] = []
    weights: list[float] = []
    lefts: list[float] = []
    rights: list[float] = []
    for x, v in zip(xs, ys, strict=True):
        values.append(float(v))
        weights.append(1.0)
        lefts.append(float(x))
        rights.append(float(x))
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:] = [merged]
            weights[-2:] = [w]
            lefts[-2:] = [lefts[-2]]
            rights[-2:] = [rights[-1]]
    raw: list[float] = []
    cal: list[float] = []
    for lo, hi, v in zip(lefts, rights, values, strict=True):
        raw.extend((lo, hi) if hi > lo else (lo,))
        cal.extend((v, v) if hi > lo else (v,))
    if len(raw) > max_points:
        keep = np.unique(np.linspace(0, len(raw) - 1, max_points).round().astype(int))
        raw = [raw[i] for i in keep]
        cal = [cal[i] for i in keep]
    return tuple(raw), tuple(cal)
