"""Walk-forward retraining: every block of the backtest is traded by a model trained before it.

``gal-friday backtest --retrain-every DAYS [--train-window DAYS]`` cuts the backtest period
into consecutive blocks of DAYS (the last one may be shorter). For each block a model is
trained, with the same spec as ``gal-friday train`` (``spec_from_settings``: label, folds,
floors, LightGBM parameters and rounds), on the candles of the training pair (the first pair,
as ``gal-friday train`` picks) whose interval *opens* in ``[block start - window, block
start)``: every one of them has closed by the block's start. Labels are computed on that slice
alone (``make_labels``), so the last ``horizon`` minutes of the window are unlabelled and
dropped: no training label can see a candle of the block. The walk-forward validation inside
``train_model`` purges ``horizon`` rows before each of its own test folds as usual.

That block's probabilities, for every pair, are then the block model's, computed in one batch
over the block's feature rows and calibrated and combined exactly as live
(``signals.combined_probabilities``). Features are computed once over the whole series,
history included, so they are warm at the start of the period (and proven free of
look-ahead by ``signals.checked_features``).

A block whose model the training floors reject (``ModelRejected``), or whose window holds too
few rows to validate, publishes no prediction (NaN): it opens nothing. Positions opened in an
earlier block are still managed by their protective orders and the strategy's timeouts.

Every block model is saved under ``<report>/models/<model id>/`` and described in the report
(``metrics.json``, key ``walk_forward``): its id, its block, the requested training window,
the data window it was actually fitted on, its out-of-fold AUC, its out-of-sample calibrated
Brier score beside climatology's and the skill score over it, or the reason it was rejected.
Model ids are derived from the block (``wf-00-20251228T0000``), so the same inputs give the
same report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gal_friday.backtest.data import PairData
from gal_friday.backtest.signals import (
    FeatureBuilder,
    PairSignals,
    checked_features,
    combined_probabilities,
)
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings
from gal_friday.features import candle_feature_names
from gal_friday.prediction.model import ModelError
from gal_friday.prediction.pipeline import train_from_candles
from gal_friday.prediction.service import LoadedModel, load_models
from gal_friday.prediction.training import (
    ModelRejected,
    TrainResult,
    TrainSpec,
    spec_from_settings,
)

DAY_S = 86_400
DEFAULT_WINDOW_DAYS = 90.0
WALK_FORWARD_ID = "walk-forward"

Trainer = Callable[[CandleSeries, Path, str], TrainResult]
"""Train on these candles, save to this directory under this id; raise ModelRejected."""
Report = Callable[[str], None]


@dataclass(frozen=True)
class Block:
    """Candles opening in ``[start_s, end_s)`` are traded by the block's model."""

    index: int
    start_s: int
    end_s: int


@dataclass
class BlockModel:
    """What traded one block: a trained model, or nothing (``model`` is None) and why."""

    block: Block
    train_start_s: int  # the requested window: candles opening in [train_start_s, start_s)
    train_candles: int
    model_id: str
    model: LoadedModel | None = None
    summary: dict[str, float] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def status(self) -> str:
        return "trained" if self.model is not None else "rejected"

    def describe(self, models_dir: Path | None = None) -> dict[str, Any]:
        """The block's entry in the report (JSON-ready, no wall-clock time, no abs paths)."""
        doc: dict[str, Any] = {
            "block": self.block.index,
            "start": iso_s(self.block.start_s),
            "end": iso_s(self.block.end_s),
            "status": self.status,
            "model_id": self.model_id if self.model is not None else None,
            "train_window": {
                "start": iso_s(self.train_start_s),
                "end": iso_s(self.block.start_s),
                "start_s": self.train_start_s,
                "end_s": self.block.start_s,
                "candles": self.train_candles,
            },
        }
        if self.model is not None:
            dw = self.data_window
            doc["data_window"] = {
                "start_s": int(dw["start_s"]),
                "end_s": int(dw["end_s"]),
                "rows": int(dw["rows"]),
                "start": iso_s(int(dw["start_s"])),
                "end": iso_s(int(dw["end_s"])),
            }
            doc["mean_auc"] = _finite(self.summary.get("mean_auc"))
            doc["calibrated_brier"] = _finite(self.summary.get("calibrated_brier"))
            doc["climatology_brier"] = _finite(self.summary.get("climatology_brier"))
            doc["brier_skill"] = _finite(self.summary.get("brier_skill"))
            if models_dir is not None:
                doc["model_dir"] = str(models_dir / self.model_id)
        else:
            doc["reason"] = self.reason
        return doc


def iso_s(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def make_blocks(start_s: int, end_s: int, every_s: int) -> list[Block]:
    """Consecutive blocks of ``every_s`` seconds covering ``[start_s, end_s)``."""
    if every_s <= 0:
        raise ValueError("the retraining interval must be positive")
    edges = [*range(start_s, end_s, every_s), end_s]
    return [Block(k, a, b) for k, (a, b) in enumerate(pairwise(edges)) if b > a]


def training_candles(series: CandleSeries, block_start_s: int, window_s: int) -> CandleSeries:
    """The candles opening in ``[block_start_s - window_s, block_start_s)``: all closed by the
    block's start (a candle opening at ``start - interval`` closes at ``start``)."""
    lo = int(np.searchsorted(series.time_s, block_start_s - window_s, "left"))
    hi = int(np.searchsorted(series.time_s, block_start_s, "left"))
    return series.slice(lo, hi)


def block_model_id(block: Block) -> str:
    return f"wf-{block.index:02d}-{datetime.fromtimestamp(block.start_s, UTC):%Y%m%dT%H%M}"


def default_trainer(settings: Settings, spec: TrainSpec | None = None) -> Trainer:
    """``gal-friday train``'s pipeline (feature rows, batch features, the configured spec)."""
    chosen = spec or spec_from_settings(settings.training, settings.strategy)

    def train(candles: CandleSeries, out_dir: Path, model_id: str) -> TrainResult:
        return train_from_candles(
            settings, candles, out_dir, spec=chosen, model_id=model_id, progress=False
        )

    return train


def train_blocks(
    settings: Settings,
    series: CandleSeries,
    blocks: Sequence[Block],
    window_s: int,
    models_dir: Path,
    *,
    trainer: Trainer | None = None,
    report: Report | None = None,
) -> list[BlockModel]:
    """Train one model per block on ``series`` strictly before the block (see the module
    doc); a rejected model leaves its block without one."""
    train = trainer or default_trainer(settings)
    names = candle_feature_names(settings.features)
    out: list[BlockModel] = []
    for block in blocks:
        window = training_candles(series, block.start_s, window_s)
        entry = BlockModel(block, block.start_s - window_s, len(window), block_model_id(block))
        if report:
            report(
                f"block {block.index + 1}/{len(blocks)} {iso_s(block.start_s)} → "
                f"{iso_s(block.end_s)}: training {entry.model_id} on {len(window):,} "
                f"candles from {iso_s(entry.train_start_s)}"
            )
        try:
            if len(window) == 0:
                raise ValueError("no candles in the training window")
            result = train(window, models_dir / entry.model_id, entry.model_id)
        except ModelRejected as exc:
            entry.reason = str(exc)
        except ValueError as exc:  # too few rows for the walk-forward folds
            entry.reason = f"not trained: {exc}"
        else:
            end_s = int(result.meta.data_window["end_s"])
            if end_s >= block.start_s:  # guard: the pipeline must never see the block
                raise AssertionError(
                    f"{entry.model_id} was trained on data up to {end_s}, "
                    f"after its block's start {block.start_s}"
                )
            try:
                (entry.model,) = load_models([result.directory], None, names)
            except ModelError as exc:
                entry.reason = f"unusable: {exc}"
            entry.summary = dict(result.summary)
            entry.data_window = dict(result.meta.data_window)
        if report:
            if entry.model is not None:
                report(
                    f"  {entry.model_id}: mean AUC {entry.summary['mean_auc']:.4f}, "
                    f"calibrated Brier {entry.summary['calibrated_brier']:.4f} vs climatology "
                    f"{entry.summary['climatology_brier']:.4f} "
                    f"(skill {entry.summary['brier_skill']:+.4f}, out of sample)"
                )
            else:
                report(f"  {entry.model_id}: {entry.reason}; the block trades nothing")
        out.append(entry)
    return out


def block_signals(
    series: CandleSeries, models: Sequence[BlockModel], settings: Settings, build: FeatureBuilder
) -> PairSignals:
    """Features for every candle; each block's rows get that block's model's calibrated
    probabilities (one batch per block), NaN outside the blocks and in rejected ones."""
    table = checked_features(series, build)
    prob = np.full(len(series), np.nan)
    for entry in models:
        if entry.model is None:
            continue
        lo = int(np.searchsorted(series.time_s, entry.block.start_s, "left"))
        hi = int(np.searchsorted(series.time_s, entry.block.end_s, "left"))
        if hi > lo:
            prob[lo:hi] = combined_probabilities(
                [entry.model], table.values[lo:hi], table.names, settings.prediction.combine
            )
    return PairSignals(prob, table.names, table.values, WALK_FORWARD_ID)


def from_period(
    data: Sequence[PairData], signals: dict[str, PairSignals], start_s: int
) -> tuple[list[PairData], dict[str, PairSignals]]:
    """Data and signals cut to the candles opening at or after ``start_s`` (the history
    before it only trained models and warmed features up)."""
    out_data, out_signals = [], {}
    for d in data:
        lo = int(np.searchsorted(d.candles.time_s, start_s, "left"))
        if lo >= len(d.candles):
            continue
        out_data.append(
            PairData(d.pair, d.candles.slice(lo, len(d.candles)), d.instrument, d.interval_s)
        )
        s = signals[d.pair]
        out_signals[d.pair] = PairSignals(s.prob[lo:], s.names, s.features[lo:], s.model_id)
    return out_data, out_signals


def walk_forward_signals(
    settings: Settings,
    data: Sequence[PairData],
    *,
    start_s: int,
    every_days: float,
    window_days: float,
    models_dir: Path,
    build: FeatureBuilder,
    trainer: Trainer | None = None,
    report: Report | None = None,
) -> tuple[list[PairData], dict[str, PairSignals], dict[str, Any]]:
    """Train the block models and compute the period's signals.

    ``data`` holds the history too; the returned data and signals start at ``start_s``. The
    third item is the report's ``walk_forward`` section (plus the strategy's name).
    """
    if every_days <= 0 or window_days <= 0:
        raise ValueError("--retrain-every and --train-window must be positive")
    end_s = max(int(d.candles.time_s[-1]) + d.interval_s for d in data)
    if start_s >= end_s:
        raise ValueError(
            "no candles after the first training window: give more history "
            "or a shorter --train-window"
        )
    blocks = make_blocks(start_s, end_s, round(every_days * DAY_S))
    window_s = round(window_days * DAY_S)
    train_pair = data[0]
    models = train_blocks(
        settings, train_pair.candles, blocks, window_s, models_dir, trainer=trainer, report=report
    )
    signals = {d.pair: block_signals(d.candles, models, settings, build) for d in data}
    period, period_signals = from_period(data, signals, start_s)
    spec = spec_from_settings(settings.training, settings.strategy)
    notes: dict[str, Any] = {
        "strategy": "model-walk-forward",
        "walk_forward": {
            "retrain_every_days": every_days,
            "train_window_days": window_days,
            "train_pair": train_pair.pair,
            "period_start": iso_s(start_s),
            "period_end": iso_s(end_s),
            "spec": {
                "threshold_pct": spec.threshold_pct,
                "horizon_min": spec.horizon_min,
                "folds": spec.folds,
                "rounds": spec.rounds,
                "min_auc": spec.min_auc,
                "min_brier_skill": spec.min_brier_skill,
                "max_brier": spec.max_brier,
            },
            "blocks": [m.describe(Path("models")) for m in models],
            "rejected_blocks": [m.block.index for m in models if m.model is None],
        },
    }
    return period, period_signals, notes
