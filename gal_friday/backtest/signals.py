"""What the strategy sees at each candle's close, computed for the whole run at once.

Features come from the vectorised batch path (``batch_candle_features``, proven equal to the
live incremental engine), predictions from one LightGBM ``predict`` call per model over the
whole feature matrix, calibrated and combined exactly as the live inference worker and
``PredictionService`` do (the same float operations in the same order, so equal bit for bit).

No look-ahead: row ``i`` may depend on candles ``0..i`` only. ``check_no_lookahead``
recomputes the features of prefixes of the series and requires the overlapping rows to be
identical: a feature that reads a later candle changes at the end of a prefix and is caught.
The engine then uses row ``i`` only at the close of candle ``i``; orders sent then fill on
later candles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gal_friday.candles import CandleSeries, FloatArray
from gal_friday.config import FeatureSettings
from gal_friday.features import FeatureTable, batch_candle_features, candle_feature_names
from gal_friday.prediction.model import Calibration, ModelError, check_features, load_booster
from gal_friday.prediction.service import Combine, LoadedModel

log = logging.getLogger(__name__)
FeatureBuilder = Callable[[CandleSeries], FeatureTable]


class LookAheadError(Exception):
    """A feature row depends on candles after its own; the message names the feature."""


@dataclass(frozen=True)
class PairSignals:
    """Per candle of one pair (aligned with its series): the probability published at the
    candle's close (NaN: nothing published) and the feature row the strategy receives."""

    prob: FloatArray
    names: tuple[str, ...]
    features: FloatArray  # shape (candles, len(names)); NaN rows where no feature row exists
    model_id: str


def feature_rows_mask(series: CandleSeries) -> np.ndarray:
    """Candles that are feature rows (as ``incremental.is_feature_row``)."""
    mask: np.ndarray = (series.volume > 0.0) & (series.low > 0.0)
    return mask


def check_no_lookahead(
    series: CandleSeries,
    build: FeatureBuilder,
    full: FeatureTable,
    cuts: Sequence[int] | None = None,
) -> None:
    """Raise LookAheadError unless features of prefixes equal the full run's first rows."""
    n = len(full)
    for cut in cuts if cuts is not None else sorted({min(n, 500), min(n, 4000)}):
        if cut < 2:
            continue
        prefix = build(series.slice(0, _candles_for_rows(series, cut)))
        a, b = prefix.values, full.values[: len(prefix)]
        same = (a == b) | (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=1e-12)
        if not same.all():
            row, col = np.argwhere(~same)[0]
            raise LookAheadError(
                f"feature {full.names[col]!r} at row {row} changes when later candles are "
                f"removed ({b[row, col]!r} with them, {a[row, col]!r} without): it looks ahead"
            )


def _candles_for_rows(series: CandleSeries, rows: int) -> int:
    """How many candles hold the first ``rows`` feature rows."""
    positions = np.flatnonzero(feature_rows_mask(series))
    return int(positions[rows - 1]) + 1 if rows <= len(positions) else len(series)


def checked_features(series: CandleSeries, build: FeatureBuilder) -> FeatureTable:
    """Batch features, proven free of look-ahead, aligned with the candles."""
    table = build(series)
    check_no_lookahead(series, build, table)
    keep = feature_rows_mask(series)
    values = np.full((len(series), len(table.names)), np.nan)
    values[keep] = table.values
    return FeatureTable(series.time_s, table.names, values)


def default_builder(settings: FeatureSettings) -> FeatureBuilder:
    return lambda series: batch_candle_features(series, settings)


# --- predictions -------------------------------------------------------------------------------


def calibrate(calibration: Calibration, raw: FloatArray) -> FloatArray:
    """``Calibration.apply`` over an array, with the same float operations (bit-equal)."""
    if not calibration.raw:
        return raw.copy()
    xs, ys = np.asarray(calibration.raw), np.asarray(calibration.calibrated)
    lo = np.clip(np.searchsorted(xs, raw, side="right") - 1, 0, len(xs) - 2)
    hi = lo + 1
    span = xs[hi] - xs[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(span == 0, 0.0, (raw - xs[lo]) / np.where(span == 0, 1.0, span))
    out = ys[lo] + w * (ys[hi] - ys[lo])
    out = np.where(raw <= xs[0], ys[0], out)
    return np.where(raw >= xs[-1], ys[-1], out)  # type: ignore[no-any-return]


def model_probabilities(
    model: LoadedModel, features: FloatArray, names: tuple[str, ...]
) -> FloatArray:
    """Calibrated probabilities of one model for every row (NaN where a feature is missing,
    as the live service publishes nothing for an incomplete row)."""
    positions = list(check_features(model.meta, names))
    # no copies when the model reads every column in order and every row is complete (the
    # usual case): the predict call then reads the feature matrix itself
    if positions == list(range(features.shape[1])):
        x = np.ascontiguousarray(features, dtype=np.float64)
    else:
        x = np.ascontiguousarray(features[:, positions], dtype=np.float64)
    complete = ~np.isnan(x).any(axis=1)
    out = np.full(len(x), np.nan)
    if complete.any():
        booster = load_booster(model.directory)
        rows = x if complete.all() else x[complete]
        raw = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
        out[complete] = calibrate(model.meta.calibration, raw)
    return out


def combined_probabilities(
    models: Sequence[LoadedModel], features: FloatArray, names: tuple[str, ...], how: Combine
) -> FloatArray:
    """``service.combine`` over arrays: the same sums in the same order."""
    total = sum(m.weight for m in models)
    acc: FloatArray | float = 0
    for model in models:
        p = model_probabilities(model, features, names)
        acc = acc + (np.where(p > 0.5, model.weight, 0.0) if how == "vote" else p * model.weight)
        acc = np.where(np.isnan(p), np.nan, acc)
    return np.asarray(acc, dtype=np.float64) / total


def check_candle_models(models: Sequence[LoadedModel], settings: FeatureSettings) -> None:
    """Refuse models that need book or trade-flow features: candles hold neither."""
    names = candle_feature_names(settings)
    for model in models:
        try:
            check_features(model.meta, names)
        except ModelError as exc:
            raise ModelError(f"{exc} (a backtest on candles has candle features only)") from None


def model_signals(
    series: CandleSeries,
    models: Sequence[LoadedModel],
    how: Combine,
    build: FeatureBuilder,
    *,
    first: int = 0,
) -> PairSignals:
    """Features for every candle of one pair, combined model probabilities from candle
    ``first`` on (NaN before it: candles there only warm the features up)."""
    table = checked_features(series, build)
    prob = np.full(len(series), np.nan)
    prob[first:] = combined_probabilities(models, table.values[first:], table.names, how)
    model_id = "+".join(m.meta.model_id for m in models)
    return PairSignals(prob, table.names, table.values, model_id)


# --- a classic strategy -------------------------------------------------------------------------


def sma(close: FloatArray, period: int) -> FloatArray:
    """Simple moving average equal to ``math.fsum(window) / period`` (backtrader's formula):
    each window is summed in extended precision, exact for windows of like-sized prices."""
    out = np.full(len(close), np.nan)
    if len(close) >= period:
        windows = sliding_window_view(close.astype(np.longdouble), period)
        out[period - 1 :] = windows.sum(axis=1).astype(np.float64) / period
    return out


def crossover(fast: FloatArray, slow: FloatArray) -> FloatArray:
    """+1 where ``fast`` crosses above ``slow``, -1 below, else 0; a zero difference carries
    the last non-zero one, as backtrader's ``CrossOver`` does."""
    diff = fast - slow
    valid = ~np.isnan(diff)
    nz = np.where(valid & (diff != 0.0), diff, np.nan)
    first = int(np.argmax(valid)) if valid.any() else len(diff)
    if first < len(diff):
        nz[first] = diff[first]  # the seed keeps its value even when zero
    index = np.where(~np.isnan(nz), np.arange(len(nz)), -1)
    carried = np.maximum.accumulate(index)
    nzd = np.where(carried >= 0, nz[np.maximum(carried, 0)], np.nan)
    prev = np.r_[np.nan, nzd[:-1]]
    out = np.zeros(len(diff))
    out[(prev < 0.0) & (fast > slow)] = 1.0
    out[(prev > 0.0) & (fast < slow)] = -1.0
    return out


def sma_cross_signals(series: CandleSeries, fast: int = 10, slow: int = 30) -> PairSignals:
    """SMA crossover as predictions: 1.0 at an upward cross (buy), 0.0 at a downward cross
    (exit), NaN elsewhere; the features carry the two averages."""
    f, s = sma(series.close, fast), sma(series.close, slow)
    cross = crossover(f, s)
    prob = np.where(cross > 0, 1.0, np.where(cross < 0, 0.0, np.nan))
    return PairSignals(
        prob, (f"sma_{fast}", f"sma_{slow}"), np.column_stack([f, s]), f"sma-{fast}-{slow}"
    )
