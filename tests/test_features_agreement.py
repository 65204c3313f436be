"""The live (incremental) and batch (numpy) candle features are the same numbers.

Each feature is held to 1e-9 of its own size: relatively, or absolutely against 1e-9 of the
column's median magnitude where a value crosses zero (MACD, distances). NaN (warm-up) must
sit in exactly the same cells.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from gal_friday.candles import CandleSeries
from gal_friday.config import FeatureSettings
from gal_friday.events import CandleEvent
from gal_friday.features import (
    CandleFeatureState,
    FeatureTable,
    PairFeatures,
    batch_candle_features,
    candle_feature_names,
    converged_rows,
    convergence_rows,
    first_valid_rows,
    warmup_rows,
)
from gal_friday.features.batch import linear_scan

NS = 1_000_000_000


def random_walk(n: int, start: float, seed: int, decimals: int) -> CandleSeries:
    """Minute candles of a geometric random walk on a price tick, with realistic volume, one
    long flat stretch (every close equal), and some empty minutes (no row in Kraken's files)."""
    rng = np.random.default_rng(seed)
    close = np.round(start * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n))), decimals)
    close[n // 5 : n // 5 + 80] = close[n // 5]
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 3e-4, n))), decimals)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 3e-4, n))), decimals)
    volume = np.round(rng.lognormal(10.0, 1.5, n), 8)
    minutes = np.cumsum(1 + (rng.random(n) < 0.05) * rng.integers(1, 10, n))
    return CandleSeries(
        minutes.astype(np.int64) * 60, open_, high, low, close, volume, rng.integers(1, 50, n)
    )


def incremental_table(series: CandleSeries, settings: FeatureSettings) -> np.ndarray:
    state = CandleFeatureState(settings)
    return np.array(
        [
            state.update(h, lo, c, v)
            for h, lo, c, v in zip(
                series.high.tolist(),
                series.low.tolist(),
                series.close.tolist(),
                series.volume.tolist(),
                strict=True,
            )
        ]
    )


def assert_same_features(live: np.ndarray, batch: FeatureTable) -> None:
    assert live.shape == batch.values.shape
    for j, name in enumerate(batch.names):
        got, want = live[:, j], batch.values[:, j]
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: warm-up differs"
        valid = ~np.isnan(want)
        scale = float(np.median(np.abs(want[valid]))) if valid.any() else 0.0
        np.testing.assert_allclose(
            got[valid], want[valid], rtol=1e-9, atol=1e-9 * scale, err_msg=name
        )


@pytest.mark.parametrize(
    ("start", "decimals"), [(0.1, 7), (0.5, 6), (3.0, 5)], ids=["doge-like", "mid", "xrp-like"]
)
def test_incremental_and_batch_agree_on_long_series(start: float, decimals: int) -> None:
    series = random_walk(22_000, start, seed=int(start * 10), decimals=decimals)
    settings = FeatureSettings()
    batch = batch_candle_features(series, settings)
    assert batch.names == candle_feature_names(settings)
    assert_same_features(incremental_table(series, settings), batch)


def test_agreement_holds_for_other_parameters_too() -> None:
    settings = FeatureSettings(
        rsi_period=3,
        macd_fast=2,
        macd_slow=5,
        macd_signal=4,
        bb_period=7,
        bb_k=1.5,
        vwap_window=2,
        roc_lookbacks=(2, 60),
        atr_period=1,
        volatility_window=2,
    )
    series = random_walk(5_000, 0.8, seed=3, decimals=5)
    assert_same_features(
        incremental_table(series, settings), batch_candle_features(series, settings)
    )


def test_warm_up_is_nan_until_each_feature_has_its_history_then_never() -> None:
    settings = FeatureSettings()
    table = batch_candle_features(random_walk(300, 0.5, seed=9, decimals=6), settings)
    for name, first in first_valid_rows(settings).items():
        column = table.column(name)
        assert np.isnan(column[:first]).all(), name
        assert not np.isnan(column[first:]).any(), name
    complete = ~np.isnan(table.values).any(axis=1)
    assert int(np.argmax(complete)) == warmup_rows(settings) == 33


@pytest.mark.parametrize(
    "settings",
    [
        FeatureSettings(),
        FeatureSettings(rsi_period=7, macd_fast=5, macd_slow=35, macd_signal=5, atr_period=21),
    ],
)
def test_after_its_convergence_rows_a_feature_forgets_where_the_series_began(
    settings: FeatureSettings,
) -> None:
    # a series begun converged_rows before a row gives that row's feature within a millionth
    # of the feature's range of the value from the whole series; begun only warmup rows
    # before, the recursive ones (RSI, MACD, ATR) are far off
    series = random_walk(6_000, 0.5, seed=4, decimals=6)
    full = batch_candle_features(series, settings)
    converged, first = converged_rows(settings), first_valid_rows(settings)
    recursive = ("rsi_", "macd_", "atr_")
    for j, name in enumerate(full.names):
        column = full.values[:, j]
        allowed = 1e-6 * (np.nanmax(column) - np.nanmin(column))
        warm_only = 0.0
        for at in (1_500, 3_000, 4_500, 5_900):
            for rows in (converged[name], first[name]):
                short = batch_candle_features(series.slice(at - rows, len(series)), settings)
                error = abs(short.values[rows, j] - column[at])
                if rows == converged[name]:
                    assert error <= allowed, (name, at, error, allowed)
                else:
                    warm_only = max(warm_only, error)
        assert (warm_only > 100 * allowed) == name.startswith(recursive), name
    assert convergence_rows(settings) == max(converged.values())
    assert convergence_rows(FeatureSettings()) == 210


def test_series_shorter_than_the_warm_up_is_all_nan_in_both() -> None:
    settings = FeatureSettings()
    series = random_walk(10, 0.5, seed=1, decimals=6)
    batch = batch_candle_features(series, settings)
    assert_same_features(incremental_table(series, settings), batch)
    assert np.isnan(batch.column("macd_12_26_pct")).all()


def test_rows_without_volume_or_with_a_corrupt_price_are_skipped_by_both_paths() -> None:
    series = random_walk(400, 0.5, seed=5, decimals=6)
    volume = series.volume.copy()
    volume[[50, 51]] = 0.0
    low = series.low.copy()
    low[200] = 0.0
    with_gaps = CandleSeries(
        series.time_s, series.open, series.high, low, series.close, volume, series.trades
    )
    keep = (volume > 0) & (low > 0)
    trimmed = CandleSeries(
        series.time_s[keep],
        series.open[keep],
        series.high[keep],
        low[keep],
        series.close[keep],
        volume[keep],
        series.trades[keep],
    )
    settings = FeatureSettings()
    batch = batch_candle_features(with_gaps, settings)
    assert len(batch) == 397
    assert not np.isin(series.time_s[[50, 51, 200]], batch.time_s).any()
    assert_same_features(incremental_table(trimmed, settings), batch)


def candle_event(series: CandleSeries, i: int, *, closed: bool = True) -> CandleEvent:
    t = int(series.time_s[i]) * NS

    def dec(x: float) -> Decimal:
        return Decimal(repr(float(x)))

    return CandleEvent(
        "XRP/USD",
        60,
        t,
        dec(series.open[i]),
        dec(series.high[i]),
        dec(series.low[i]),
        dec(series.close[i]),
        dec(series.volume[i]),
        dec(series.close[i]),
        int(series.trades[i]),
        closed,
        t + 61 * NS,
    )


def test_live_candle_events_with_repeats_and_updates_give_the_batch_table() -> None:
    """What the engine sees live (in-progress updates, closed candles re-sent after a
    reconnect) yields exactly the rows of the candle file, once each."""
    series = random_walk(3_000, 0.6, seed=11, decimals=6)
    settings = FeatureSettings()
    state = PairFeatures("XRP/USD", settings)
    rows = []
    for i in range(len(series)):
        assert state.on_candle(candle_event(series, i, closed=False)) is None
        row = state.on_candle(candle_event(series, i))
        assert row is not None
        rows.append(row[: len(candle_feature_names(settings))])
        if i % 500 == 499:  # reconnect: the snapshot repeats the last 100 closed candles
            assert all(
                state.on_candle(candle_event(series, k)) is None for k in range(i - 99, i + 1)
            )
    assert state.repeats == 600
    assert_same_features(np.array(rows), batch_candle_features(series, settings))


def test_linear_scan_solves_the_recurrence() -> None:
    rng = np.random.default_rng(0)
    drive = rng.normal(size=1000)
    expected = np.empty(1000)
    y = 0.0
    for i, x in enumerate(drive.tolist()):
        y = x if i == 0 else 0.93 * y + x
        expected[i] = y
    np.testing.assert_allclose(linear_scan(0.93, drive), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(linear_scan(0.0, drive), drive)  # period-1 smoothing
