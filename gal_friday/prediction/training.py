"""Training pipeline: candles -> features and labels -> walk-forward validation -> a model.

Label (no look-ahead into features): row t is 1 when the high of some candle within the next
``horizon_min`` minutes (by time, so gaps are respected) reaches ``close[t] * (1 + threshold)``,
else 0; rows whose horizon runs past the data are unlabelled. Features at t use candles up to t
only (the batch feature engine guarantees it).

Walk-forward: the data is cut into ``folds + 1`` consecutive blocks; fold k trains on block k
(rolling) or blocks 0..k (expanding) and tests on block k+1, with the last ``horizon`` rows
before each test block purged from training so no training label peeks into the test window.
Out-of-fold predictions give the isotonic calibration map and the acceptance metrics; the final
model is trained on everything and saved with its metadata only if it clears the floors.
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
from gal_friday.prediction.metrics import evaluate, isotonic_fit
from gal_friday.prediction.model import Calibration, ModelMetadata, save_model_files

Array = npt.NDArray[np.float64]
FeatureBuilder = Callable[[CandleSeries], tuple[tuple[str, ...], Array]]


class ModelRejected(Exception):
    """Validation did not clear the acceptance floors; nothing was written."""


@dataclass(frozen=True)
class TrainSpec:
    """What to learn and how to judge it (mirrors the ``[training]`` config section)."""

    threshold_pct: float = 0.1
    horizon_min: int = 5
    folds: int = 4
    window: Literal["expanding", "rolling"] = "expanding"
    min_auc: float = 0.52
    max_brier: float = 0.25
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
    if folds < 1:
        raise ValueError("at least one fold is needed")
    edges = np.linspace(0, n, folds + 2).astype(int)
    out = []
    for k in range(folds):
        start = 0 if window == "expanding" else int(edges[k])
        train_stop = int(edges[k + 1]) - horizon
        test = (int(edges[k + 1]), int(edges[k + 2]))
        if train_stop - start < 100 or test[1] - test[0] < 50:
            raise ValueError(f"not enough rows ({n}) for {folds} folds")
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
    tested = ~np.isnan(oof)
    raw, cal = isotonic_fit(oof[tested], y[tested])
    calibration = Calibration(raw, cal)
    calibrated = np.array([calibration.apply(float(p)) for p in oof[tested]])
    summary = _summary(fold_metrics, y[tested], calibrated, spec)
    _check_floors(summary, spec)
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


def _summary(
    fold_metrics: list[dict[str, Any]], y: Array, calibrated: Array, spec: TrainSpec
) -> dict[str, Any]:
    calibrated_metrics = evaluate(y, calibrated, spec.buy_threshold, spec.sell_threshold)
    return {
        "mean_auc": float(np.nanmean([f["auc"] for f in fold_metrics])),
        "mean_brier_raw": float(np.mean([f["brier"] for f in fold_metrics])),
        **{f"calibrated_{k}": v for k, v in calibrated_metrics.items()},
    }


def _check_floors(summary: dict[str, Any], spec: TrainSpec) -> None:
    problems = []
    if not summary["mean_auc"] >= spec.min_auc:
        problems.append(f"mean AUC {summary['mean_auc']:.4f} is below the floor {spec.min_auc}")
    if not summary["calibrated_brier"] <= spec.max_brier:
        problems.append(
            f"calibrated Brier score {summary['calibrated_brier']:.4f} is above "
            f"the ceiling {spec.max_brier}"
        )
    if problems:
        raise ModelRejected("model rejected: " + "; ".join(problems))


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
