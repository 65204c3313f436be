"""The one ordered feature list, derived from the configuration.

Names carry their parameters (``rsi_14``, ``bb_pctb_20_2``) so that a model trained with other
periods does not silently match the engine: the prediction service checks a model's feature
names against ``feature_names()`` and refuses what the engine does not produce.
"""

from __future__ import annotations

import math

from gal_friday.config import FeatureSettings


def _num(value: float) -> str:
    """``2.0`` -> ``'2'``, ``2.5`` -> ``'2p5'``: short, and safe in CSV headers and models."""
    return f"{value:g}".replace(".", "p")


def candle_feature_names(s: FeatureSettings) -> tuple[str, ...]:
    """Features computed from closed candles alone: both the live engine and the batch table."""
    macd = f"{s.macd_fast}_{s.macd_slow}"
    bands = f"{s.bb_period}_{_num(s.bb_k)}"
    return (
        f"rsi_{s.rsi_period}",
        f"macd_{macd}_pct",
        f"macd_signal_{macd}_{s.macd_signal}_pct",
        f"macd_hist_{macd}_{s.macd_signal}_pct",
        f"bb_pctb_{bands}",
        f"bb_width_{bands}",
        f"vwap_dist_{s.vwap_window}_pct",
        *(f"roc_{n}_pct" for n in s.roc_lookbacks),
        f"atr_{s.atr_period}",
        f"atr_{s.atr_period}_pct",
        f"volatility_{s.volatility_window}",
    )


def book_feature_names(s: FeatureSettings) -> tuple[str, ...]:
    """Features of the latest verified order book (live only: candle files hold no book)."""
    names = ["book_spread", "book_spread_pct"]
    for n in s.book_levels:
        names += [
            f"book_imbalance_{n}",
            f"book_bid_wap_dist_{n}_pct",
            f"book_ask_wap_dist_{n}_pct",
            f"book_bid_depth_{n}",
            f"book_ask_depth_{n}",
            f"book_bid_depth_quote_{n}",
            f"book_ask_depth_quote_{n}",
        ]
    return tuple(names)


def flow_feature_names(s: FeatureSettings) -> tuple[str, ...]:
    """Features of the candle's public trades by taker side (live only: no sides in files)."""
    del s  # no parameters yet; kept so every group is derived the same way
    return ("volume_delta", "volume_delta_ratio")


def feature_names(s: FeatureSettings) -> tuple[str, ...]:
    """Every feature the engine publishes, in FeatureEvent order: candle, book, trade flow."""
    return candle_feature_names(s) + book_feature_names(s) + flow_feature_names(s)


def first_valid_rows(s: FeatureSettings) -> dict[str, int]:
    """Row index (0-based, counting candle rows) of each candle feature's first value.

    Before it the feature is NaN in both implementations: a window must be full, or a
    smoothed average must have its seed (the simple mean of its first ``period`` inputs).
    """
    names = candle_feature_names(s)
    rows = [
        s.rsi_period,  # needs `period` price changes
        s.macd_slow - 1,  # slow EMA seeded by the mean of the first `slow` closes
        s.macd_slow + s.macd_signal - 2,  # signal EMA seeded by `signal` MACD values
        s.macd_slow + s.macd_signal - 2,
        s.bb_period - 1,
        s.bb_period - 1,
        s.vwap_window - 1,
        *s.roc_lookbacks,
        s.atr_period - 1,  # the first true range is high - low, so no previous close needed
        s.atr_period - 1,
        s.volatility_window,  # needs `window` log returns
    ]
    return dict(zip(names, rows, strict=True))


def warmup_rows(s: FeatureSettings) -> int:
    """Candle rows before every candle feature has a value (the first complete row's index)."""
    return max(first_valid_rows(s).values())


# The weight below which a smoother's starting value no longer counts: after that many rows
# its output differs from one started at the beginning of time by less than a millionth of
# the starting error (an RSI off by 2 points at the start is then off by 2e-6).
CONVERGED_WEIGHT = 1e-6


def _decay_rows(gain: float, weight: float) -> int:
    """Updates of ``y = (1 - gain) * y + gain * x`` until the start's weight
    ``(1 - gain) ** k`` is below ``weight``."""
    return math.ceil(math.log(weight) / math.log(1.0 - gain))


def _macd_signal_rows(s: FeatureSettings, weight: float) -> int:
    """Row from which the MACD signal line (an EMA of the MACD line, itself two EMAs) carries
    less than ``weight`` of where the series began: its own seed decays and so does the error
    it keeps receiving from the line (bounded by the slower of the line's two EMAs)."""
    fast, slow, signal = 2.0 / (s.macd_fast + 1), 2.0 / (s.macd_slow + 1), 2.0 / (s.macd_signal + 1)
    row = s.macd_slow + s.macd_signal - 2  # the signal's seed: weight 1 (at most)
    w = 1.0
    while w >= weight:
        row += 1
        line = max((1.0 - fast) ** (row - s.macd_fast + 1), (1.0 - slow) ** (row - s.macd_slow + 1))
        w = (1.0 - signal) * w + signal * line
    return row


def converged_rows(s: FeatureSettings, weight: float = CONVERGED_WEIGHT) -> dict[str, int]:
    """Row index (0-based, counting candle rows) from which each candle feature no longer
    depends on where the series began (to ``weight`` of its starting error).

    Windowed features (bands, VWAP, rate of change, volatility) forget the start as soon as
    their window is full, at ``first_valid_rows``. The recursive smoothers never forget it
    exactly: an EMA or Wilder average seeded at row r keeps ``(1 - a) ** k`` of its seed k rows
    later (a = 2 / (n + 1) or 1 / n), so it is converged once that weight is below ``weight``:
    187 rows after the seed for Wilder(14) (RSI, ATR), 180 for EMA(26).
    """
    first = first_valid_rows(s)
    names = candle_feature_names(s)
    rsi = s.rsi_period + _decay_rows(1.0 / s.rsi_period, weight)
    line = max(
        s.macd_fast - 1 + _decay_rows(2.0 / (s.macd_fast + 1), weight),
        s.macd_slow - 1 + _decay_rows(2.0 / (s.macd_slow + 1), weight),
    )
    signal = max(line, _macd_signal_rows(s, weight))
    atr = s.atr_period - 1 + _decay_rows(1.0 / s.atr_period, weight)
    recursive = {
        names[0]: rsi,
        names[1]: line,
        names[2]: signal,
        names[3]: signal,
        f"atr_{s.atr_period}": atr,
        f"atr_{s.atr_period}_pct": atr,
    }
    return {name: recursive.get(name, first[name]) for name in names}


def convergence_rows(s: FeatureSettings, weight: float = CONVERGED_WEIGHT) -> int:
    """Candle rows of history before every candle feature has converged (see
    ``converged_rows``; 210 with the defaults): a series started that many rows or more
    earlier gives the same features, whatever its first candle."""
    return max(converged_rows(s, weight).values())
