"""The one ordered feature list, derived from the configuration.

Names carry their parameters (``rsi_14``, ``bb_pctb_20_2``) so that a model trained with other
periods does not silently match the engine: the prediction service checks a model's feature
names against ``feature_names()`` and refuses what the engine does not produce.
"""

from __future__ import annotations

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
