"""Training pipeline: candles -> features and labels -> walk-forward validation -> a model.

Label (no look-ahead into features): row t is 1 when the high of some candle within the next
``horizon_min`` minutes (by time, so gaps are respected) reaches ``close[t] * (1 + threshold)``,
else 0; rows whose horizon runs past the data are unlabelled. Features at t use candles up to t
only (the batch feature engine guarantees it).

Walk-forward: the data is cut into ``folds + 1`` consecutive blocks; fold k trains on block k
(rolling) or blocks 0..k (expanding) and tests on block k+1, with the last ``horizon`` rows
before each test block purged from training so no training label peeks into the test window.

Calibration, scored out of sample ("forward"): fold k's out-of-fold predictions are calibrated
by an isotonic map fitted only on the out-of-fold predictions of folds 0..k-1 (purged of their
last ``horizon`` rows, whose labels look into fold k's window), and scored against climatology:
always predicting the base rate of those same earlier rows. Fold 0 has no earlier folds: it
only warms the map up and is left out of the calibrated scoring, so at least two folds are
needed. Every reported calibrated metric (``calibrated_*``, ``climatology_brier``,
``brier_skill``) is thus scored on rows neither the map nor the base rate saw.

Acceptance: the mean raw AUC must reach ``min_auc`` and the out-of-sample Brier skill score over
climatology, ``1 - brier / climatology_brier``, must exceed ``min_brier_skill`` (plus the
optional absolute ceiling ``max_brier``, off at 1.0). Only then is the final model trained on
everything and saved, with the map it uses live fitted on *all* out-of-fold predictions (more
data than any forward map had: the reported figures, if anything, understate it).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gal_friday import __version__
from gal_friday.candles import CandleSeries
from gal_friday.config import StrategySettings, TrainingSettings
from gal_friday.prediction.metrics import brier, brier_skill, evaluate, isotonic_fit
from gal_friday.prediction.model import Calibration, ModelMetadata, save_model_files

Array = npt.NDArray[np.float64]
FeatureBuilder = Callable[[CandleSeries], tuple[tuple[str, ...], Array]]


class TooFewRows(ValueError):
    """The candles cannot fill the walk-forward folds: a user's input (a short file, or too
    many folds for it), said in one line, never a traceback."""


class ModelRejected(Exception):
    """Validation did not clear the acceptance floors; nothing was written. ``summary`` holds
    the validation figures the floors judged."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary: dict[str, Any] = dict(summary or {})


@dataclass(frozen=True)
class TrainSpec:
    """What to learn and how to judge it (mirrors the ``[training]`` config section)."""

    threshold_pct: float = 0.1
    horizon_min: int = 5
    folds: int = 4
    window: Literal["expanding", "rolling"] = "expanding"
    min_auc: float = 0.52
    min_brier_skill: float | None = 0.002  # None: no skill floor (the simulator's demo model)
    max_brier: float = 1.0  # absolute ceiling on the calibrated Brier; 1.0 = none
    buy_threshold: float = 0.65
    sell_threshold: float = 0.35
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "verbose": -1,
            "num_threads": 1,
            "seed": 7,
        }
    )
    rounds: int = 200


def spec_from_settings(training: TrainingSettings, strategy: StrategySettings) -> TrainSpec:
    """The TrainSpec the configuration describes."""
    base = TrainSpec()
    return TrainSpec(
        threshold_pct=training.threshold_pct,
        horizon_min=training.horizon_min,
        folds=training.folds,
        window=training.window,
        min_auc=training.min_auc,
        min_brier_skill=training.min_brier_skill,
        max_brier=training.max_brier,
        buy_threshold=strategy.buy_threshold,
        sell_threshold=strategy.sell_threshold,
        rounds=training.rounds,
        params={
            **base.params,
            "learning_rate": training.learning_rate,
            "num_leaves": training.num_leaves,
            "min_data_in_leaf": training.min_data_in_leaf,
        },
    )


@dataclass(frozen=True)
class Fold:
    train: tuple[int, int]  # [start, stop) row positions in the labelled table
    test: tuple[int, int]


@dataclass
class TrainResult:
    meta: ModelMetadata
    directory: Path
    summary: dict[str, float]


def make_labels(candles: CandleSeries, threshold_pct: float, horizon_min: int) -> Array:
    """1.0 / 0.0 per row, NaN where the horizon is not fully inside the data."""
    n = len(candles)
    t, high, close = candles.time_s, candles.high, candles.close
    target = close * (1.0 + threshold_pct / 100.0)
    hit = np.zeros(n, dtype=bool)
    horizon_s = horizon_min * 60
    for k in range(1, horizon_min + 1):  # gaps mean the k-th next row may be past the horizon
        within = np.zeros(n, dtype=bool)
        within[:-k] = (t[k:] - t[:-k]) <= horizon_s
        reached = np.zeros(n, dtype=bool)
        reached[:-k] = high[k:] >= target[:-k]
        hit |= within & reached
    labels = hit.astype(np.float64)
    complete = t + horizon_s <= t[-1] if n else np.zeros(0, dtype=bool)
    labels[~complete] = np.nan
    return labels


def walk_forward(
    n: int, folds: int, horizon: int, window: Literal["expanding", "rolling"]
) -> list[Fold]:
    """Consecutive blocks; training always ends ``horizon`` rows before its test block."""
    if folds < 2:
        raise ValueError("at least two folds are needed (the first only warms up calibration)")
    edges = np.linspace(0, n, folds + 2).astype(int)
    out = []
    for k in range(folds):
        start = 0 if window == "expanding" else int(edges[k])
        train_stop = int(edges[k + 1]) - horizon
        test = (int(edges[k + 1]), int(edges[k + 2]))
        if train_stop - start < 100 or test[1] - test[0] < 50:
            raise TooFewRows(
                f"not enough candles to train: {n} usable rows cannot fill {folds} walk-forward "
                "folds (each needs at least 100 training and 50 test rows); give more history "
                "(training.history_days or a longer --candles file) or fewer training.folds"
            )
        out.append(Fold((start, train_stop), test))
    return out


def _fit(x: Array, y: Array, spec: TrainSpec) -> Any:
    import lightgbm  # heavy: only training and inference import it

    return lightgbm.train(dict(spec.params), lightgbm.Dataset(x, y), spec.rounds)


def train_model(
    candles: CandleSeries,
    build_features: FeatureBuilder,
    spec: TrainSpec,
    out_dir: Path,
    *,
    model_id: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Validate walk-forward, calibrate, and save the model if it clears the floors."""
    names, features = build_features(candles)
    labels = make_labels(candles, spec.threshold_pct, spec.horizon_min)
    usable = ~np.isnan(labels) & ~np.isnan(features).all(axis=1)
    x, y, times = features[usable], labels[usable], candles.time_s[usable]
    folds = walk_forward(len(y), spec.folds, spec.horizon_min, spec.window)
    oof = np.full(len(y), np.nan)
    fold_metrics = []
    for k, fold in _progress(list(enumerate(folds)), progress, "walk-forward folds"):
        tr, te = slice(*fold.train), slice(*fold.test)
        model = _fit(x[tr], y[tr], spec)
        oof[te] = model.predict(x[te])
        fold_metrics.append(
            {
                "fold": k,
                "train_rows": fold.train[1] - fold.train[0],
                "test_rows": fold.test[1] - fold.test[0],
                "train_window": [int(times[fold.train[0]]), int(times[fold.train[1] - 1])],
                "test_window": [int(times[fold.test[0]]), int(times[fold.test[1] - 1])],
                **evaluate(y[te], oof[te], spec.buy_threshold, spec.sell_threshold),
            }
        )
    forward = forward_calibration(oof, y, folds, spec.horizon_min)
    for entry, fold_forward in zip(fold_metrics, forward.per_fold, strict=True):
        entry.update(fold_forward)
    summary = _summary(fold_metrics, forward, y, spec)
    _check_floors(summary, spec)
    tested = ~np.isnan(oof)
    calibration = Calibration(*isotonic_fit(oof[tested], y[tested]))  # the live map: all folds
    final = _fit(x, y, spec)
    meta = ModelMetadata(
        model_id=model_id or f"lgbm-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        feature_names=names,
        label={
            "kind": "up_move",
            "threshold_pct": spec.threshold_pct,
            "horizon_min": spec.horizon_min,
        },
        params={**spec.params, "rounds": spec.rounds, "folds": spec.folds, "window": spec.window},
        data_window={"start_s": int(times[0]), "end_s": int(times[-1]), "rows": len(y)},
        fold_metrics=[*fold_metrics, {"fold": "out_of_fold_calibrated", **summary}],
        library_versions=_versions(),
        calibration=calibration,
        created=datetime.now(UTC).isoformat(),
    )
    save_model_files(out_dir, final.model_to_string(), meta)
    return TrainResult(meta, out_dir, summary)


@dataclass(frozen=True)
class ForwardCalibration:
    """Out-of-sample calibrated predictions and the climatology forecast, on the rows of
    folds 1.. (``rows``: positions in the labelled table), and what each fold was given."""

    rows: npt.NDArray[np.int64]
    calibrated: Array
    climatology: Array
    per_fold: list[dict[str, Any]]


def forward_calibration(
    oof: Array, y: Array, folds: list[Fold], horizon: int
) -> ForwardCalibration:
    """Calibrate each fold's out-of-fold predictions with a map fitted only on earlier folds.

    For fold k >= 1 the isotonic map and the climatology base rate come from the out-of-fold
    rows before ``test start - horizon`` (the rows after would have labels looking into fold k);
    fold 0 has nothing before it and is not scored (its per-fold entries are None).
    """
    rows, calibrated, climatology = [], [], []
    per_fold: list[dict[str, Any]] = [_unscored()]
    tested = ~np.isnan(oof)
    for fold in folds[1:]:
        earlier = tested.copy()
        earlier[max(fold.test[0] - horizon, 0) :] = False
        if not earlier.any():
            raise TooFewRows(
                "no earlier out-of-fold rows to calibrate a fold on: training.horizon_min is "
                "about as long as a fold; give more history or fewer training.folds"
            )
        cal_map = Calibration(*isotonic_fit(oof[earlier], y[earlier]))
        base_rate = float(y[earlier].mean())
        te = np.arange(*fold.test)
        cal = np.array([cal_map.apply(float(p)) for p in oof[te]])
        clim = np.full(len(te), base_rate)
        model_brier, clim_brier = brier(y[te], cal), brier(y[te], clim)
        per_fold.append(
            {
                "calibration_rows": int(earlier.sum()),
                "calibrated_brier": model_brier,
                "climatology_rate": base_rate,
                "climatology_brier": clim_brier,
                "brier_skill": brier_skill(model_brier, clim_brier),
            }
        )
        rows.append(te)
        calibrated.append(cal)
        climatology.append(clim)
    return ForwardCalibration(
        np.concatenate(rows), np.concatenate(calibrated), np.concatenate(climatology), per_fold
    )


def _unscored() -> dict[str, Any]:
    return {
        "calibration_rows": 0,
        "calibrated_brier": None,
        "climatology_rate": None,
        "climatology_brier": None,
        "brier_skill": None,
    }


def _summary(
    fold_metrics: list[dict[str, Any]], forward: ForwardCalibration, y: Array, spec: TrainSpec
) -> dict[str, Any]:
    """Raw per-fold means, and the forward-calibrated metrics pooled over folds 1.. (out of
    sample: see ``forward_calibration``) with climatology's Brier and the skill over it."""
    scored = y[forward.rows]
    calibrated = evaluate(scored, forward.calibrated, spec.buy_threshold, spec.sell_threshold)
    climatology_brier = brier(scored, forward.climatology)
    return {
        "mean_auc": float(np.nanmean([f["auc"] for f in fold_metrics])),
        "mean_brier_raw": float(np.mean([f["brier"] for f in fold_metrics])),
        **{f"calibrated_{k}": v for k, v in calibrated.items()},
        "climatology_brier": climatology_brier,
        "brier_skill": brier_skill(calibrated["brier"], climatology_brier),
        "calibrated_folds": len(fold_metrics) - 1,
    }


def _check_floors(summary: dict[str, Any], spec: TrainSpec) -> None:
    problems = []
    if not summary["mean_auc"] >= spec.min_auc:
        problems.append(f"mean AUC {summary['mean_auc']:.4f} is below the floor {spec.min_auc}")
    if spec.min_brier_skill is not None and not summary["brier_skill"] > spec.min_brier_skill:
        problems.append(
            f"Brier skill score {summary['brier_skill']:+.4f} over climatology is not above "
            f"the margin {spec.min_brier_skill}"
        )
    if not summary["calibrated_brier"] <= spec.max_brier:
        problems.append(
            f"calibrated Brier score {summary['calibrated_brier']:.4f} is above "
            f"the ceiling {spec.max_brier}"
        )
    if problems:
        raise ModelRejected(
            f"model rejected: {'; '.join(problems)}. Validation: {summary_line(summary)}", summary
        )


def summary_line(summary: dict[str, Any]) -> str:
    """The validation figures in one line (``gal-friday train``): the model's out-of-sample
    calibrated Brier score beside climatology's, and the skill over it."""
    scored = int(summary["calibrated_folds"])
    return (
        f"mean AUC {summary['mean_auc']:.4f}; out of sample on the last {scored} of "
        f"{scored + 1} folds ({summary['calibrated_rows']} rows, each calibrated only on the "
        f"folds before it): calibrated Brier {summary['calibrated_brier']:.5f}, climatology "
        f"Brier {summary['climatology_brier']:.5f}, Brier skill {summary['brier_skill']:+.4f}, "
        f"log loss {summary['calibrated_log_loss']:.4f}"
    )


def _versions() -> dict[str, str]:
    import lightgbm

    return {
        "gal_friday": __version__,
        "lightgbm": lightgbm.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _progress(items: list[Any], enabled: bool, label: str) -> Any:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=label)
