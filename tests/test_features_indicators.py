"""Each indicator against published or hand-computed values, in both implementations."""

from __future__ import annotations

import itertools
import math
import statistics
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gal_friday.candles import CandleSeries
from gal_friday.config import ConfigError, FeatureSettings, load_settings
from gal_friday.features import (
    CandleFeatureState,
    batch_candle_features,
    book_feature_names,
    candle_feature_names,
    feature_names,
    flow_feature_names,
)

# Wilder's RSI example as published by StockCharts (cs-rsi.xls): closes and 14-period RSI.
WILDER_CLOSES = [
    44.3389,
    44.0902,
    44.1497,
    43.6124,
    44.3278,
    44.8264,
    45.0955,
    45.4245,
    45.8433,
    46.0826,
    45.8931,
    46.0328,
    45.6140,
    46.2820,
    46.2820,
    46.0028,
    46.0328,
    46.4116,
    46.2222,
    45.6439,
    46.2122,
    46.2521,
    45.7137,
    46.4515,
    45.7835,
    45.3548,
    44.0288,
    44.1783,
    44.2181,
    44.5672,
    43.4205,
    42.6628,
    43.1314,
]
WILDER_RSI = [
    70.53,
    66.32,
    66.55,
    69.41,
    66.36,
    57.97,
    62.93,
    63.26,
    56.06,
    62.38,
    54.71,
    50.42,
    39.99,
    41.46,
    41.87,
    45.46,
    37.30,
    33.08,
    37.77,
]


def candles(
    close: list[float],
    high: list[float] | None = None,
    low: list[float] | None = None,
    volume: list[float] | None = None,
) -> CandleSeries:
    n = len(close)
    c = np.array(close, dtype=np.float64)
    return CandleSeries(
        np.arange(n, dtype=np.int64) * 60,
        c.copy(),
        np.array(high if high is not None else close, dtype=np.float64),
        np.array(low if low is not None else close, dtype=np.float64),
        c,
        np.array(volume if volume is not None else [1.0] * n, dtype=np.float64),
        np.ones(n, dtype=np.int64),
    )


def both(series: CandleSeries, settings: FeatureSettings, name: str) -> list[np.ndarray]:
    """The named feature's column from the batch table and from the incremental state."""
    batch = batch_candle_features(series, settings).column(name)
    state = CandleFeatureState(settings)
    j = candle_feature_names(settings).index(name)
    live = np.array(
        [
            state.update(h, lo, c, v)[j]
            for h, lo, c, v in zip(
                series.high.tolist(),
                series.low.tolist(),
                series.close.tolist(),
                series.volume.tolist(),
                strict=True,
            )
        ]
    )
    return [batch, live]


def test_rsi_reproduces_wilders_published_example() -> None:
    for column in both(candles(WILDER_CLOSES), FeatureSettings(), "rsi_14"):
        assert np.isnan(column[:14]).all()
        assert np.round(column[14:], 2).tolist() == WILDER_RSI


def test_rsi_is_100_when_only_rising_and_50_when_nothing_moved() -> None:
    settings = FeatureSettings(rsi_period=3)
    for column in both(candles([1.0, 1.1, 1.2, 1.3, 1.4]), settings, "rsi_3"):
        assert column[3:].tolist() == [100.0, 100.0]
    for column in both(candles([2.0] * 5), settings, "rsi_3"):
        assert column[3:].tolist() == [50.0, 50.0]


def test_macd_is_the_ema_difference_in_percent_of_the_slow_ema() -> None:
    settings = FeatureSettings(macd_fast=2, macd_slow=3, macd_signal=2)
    # By hand, rows 2..4: EMA(2) seeded 10.5 at row 1 (a = 2/3), EMA(3) seeded 11 at row 2
    # (a = 1/2); the signal EMA(2) is seeded with the mean of the first two MACD values.
    fast = [Fraction(23, 2), Fraction(67, 6), Fraction(223, 18)]
    slow = [Fraction(11), Fraction(11), Fraction(12)]
    line = [100 * (f - s) / s for f, s in zip(fast, slow, strict=True)]
    assert line == [Fraction(50, 11), Fraction(50, 33), Fraction(175, 54)]
    signal = (line[0] + line[1]) / 2
    signal_next = Fraction(2, 3) * line[2] + Fraction(1, 3) * signal
    nan = math.nan
    series = candles([10.0, 11.0, 12.0, 11.0, 13.0])
    for name, expected in [
        ("macd_2_3_pct", [nan, nan, *map(float, line)]),
        ("macd_signal_2_3_2_pct", [nan, nan, nan, float(signal), float(signal_next)]),
        (
            "macd_hist_2_3_2_pct",
            [nan, nan, nan, float(line[1] - signal), float(line[2] - signal_next)],
        ),
    ]:
        for column in both(series, settings, name):
            np.testing.assert_allclose(column, expected, rtol=1e-12, err_msg=name)


def test_bollinger_percent_b_and_bandwidth_by_hand() -> None:
    settings = FeatureSettings(bb_period=3, bb_k=2.0)
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3 around the mean 2
    series = candles([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    for pctb, width in zip(
        both(series, settings, "bb_pctb_3_2"), both(series, settings, "bb_width_3_2"), strict=True
    ):
        assert np.isnan(pctb[:2]).all()
        assert pctb[2] == pytest.approx((3 - (2 - 2 * std)) / (4 * std))
        assert width[2] == pytest.approx(4 * std / 2)
        assert (pctb[5], width[5]) == (0.5, 0.0)  # collapsed bands: all closes equal


def test_vwap_distance_by_hand() -> None:
    settings = FeatureSettings(vwap_window=2)
    # typical prices (3+1+2)/3 = 2 with volume 10, (6+3+3)/3 = 4 with volume 30
    series = candles([2.0, 3.0], high=[3.0, 6.0], low=[1.0, 3.0], volume=[10.0, 30.0])
    vwap = (2 * 10 + 4 * 30) / 40
    for column in both(series, settings, "vwap_dist_2_pct"):
        assert math.isnan(column[0])
        assert column[1] == pytest.approx(100 * (3.0 - vwap) / vwap)


def test_rate_of_change_per_lookback() -> None:
    settings = FeatureSettings(roc_lookbacks=(1, 2))
    series = candles([10.0, 11.0, 12.1])
    for column in both(series, settings, "roc_2_pct"):
        assert math.isnan(column[1]) and column[2] == pytest.approx(21.0)
    for column in both(series, settings, "roc_1_pct"):
        assert column[1:] == pytest.approx([10.0, 10.0])


def test_atr_uses_gaps_through_the_previous_close() -> None:
    settings = FeatureSettings(atr_period=3)
    series = candles(
        [9.0, 11.0, 10.5, 8.0], high=[10.0, 12.0, 11.5, 10.0], low=[8.0, 9.5, 10.0, 7.0]
    )
    # true ranges: 2 (first: H - L), 3 (gap up: H - prev C), 1.5, 3.5 (L - prev C)
    seed = (2 + 3 + 1.5) / 3
    after = (2 / 3) * seed + 3.5 / 3
    for column in both(series, settings, "atr_3"):
        assert np.isnan(column[:2]).all()
        assert column[2:] == pytest.approx([seed, after])
    for column in both(series, settings, "atr_3_pct"):
        assert column[3] == pytest.approx(100 * after / 8.0)


def test_volatility_is_the_sample_std_of_log_returns() -> None:
    settings = FeatureSettings(volatility_window=3)
    closes = [1.0, 1.1, 1.0, 1.2, 1.2]
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    for column in both(candles(closes), settings, "volatility_3"):
        assert np.isnan(column[:3]).all()
        assert column[3] == pytest.approx(statistics.stdev(returns[:3]))
        assert column[4] == pytest.approx(statistics.stdev(returns[1:4]))


def test_feature_names_are_one_ordered_list_that_carries_the_parameters() -> None:
    settings = FeatureSettings()
    assert candle_feature_names(settings) == (
        "rsi_14",
        "macd_12_26_pct",
        "macd_signal_12_26_9_pct",
        "macd_hist_12_26_9_pct",
        "bb_pctb_20_2",
        "bb_width_20_2",
        "vwap_dist_30_pct",
        "roc_1_pct",
        "roc_5_pct",
        "roc_15_pct",
        "atr_14",
        "atr_14_pct",
        "volatility_30",
    )
    assert feature_names(settings) == (
        candle_feature_names(settings) + book_feature_names(settings) + flow_feature_names(settings)
    )
    assert len(set(feature_names(settings))) == len(feature_names(settings)) == 31
    other = FeatureSettings(rsi_period=7, bb_k=2.5, book_levels=(3,))
    assert "rsi_7" in feature_names(other) and "bb_pctb_20_2p5" in feature_names(other)
    assert "book_imbalance_3" in feature_names(other)
    assert "book_imbalance_5" not in feature_names(other)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[features]\nmacd_fast = 26\n", "macd_fast must be smaller than macd_slow"),
        ("[features]\nroc_lookbacks = [5, 5]\n", "features.roc_lookbacks"),
        ("[features]\nbook_levels = [0]\n", "features.book_levels"),
        ("[features]\nvolatility_window = 1\n", "features.volatility_window"),
    ],
)
def test_bad_feature_parameters_are_config_errors(in_tmp: Path, toml: str, needle: str) -> None:
    (in_tmp / "c.toml").write_text(toml)
    with pytest.raises(ConfigError, match=needle):
        load_settings(in_tmp / "c.toml")
