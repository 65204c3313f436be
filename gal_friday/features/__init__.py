"""FeatureEngine: technical indicators, order-book and trade-flow features [FR-201..207].

Two implementations of the candle features agree to 1e-9, warm-up included: the incremental
one (``incremental.CandleFeatureState``, O(1) per closed candle, plain floats) runs live and in
the backtester; the vectorised one (``batch.batch_candle_features``, numpy over a
``CandleSeries``) builds training and research tables. ``feature_names(settings)`` is the one
ordered list both follow; names carry their parameters (defaults shown in brackets below).

Rows. The feature series is the pair's closed 1-minute candles that have volume (and positive
prices), in time order. Missing minutes (Kraken omits intervals without trades) are not
filled: rows are consecutive, so "n rows" means n candles with trades, live and in batch.
C, H, L, V are a row's close, high, low and volume; C[-1] is the previous row's close.

Smoothing. EMA(n): seeded with the mean of the first n inputs, then
``y = (1 - a) * y + a * x`` with ``a = 2 / (n + 1)``. Wilder(n): the same with ``a = 1 / n``.

Candle features (live and batch):

* ``rsi_{p}`` [p=14]: change ``d = C - C[-1]``; ``G = Wilder(p)`` of ``max(d, 0)``,
  ``L = Wilder(p)`` of ``max(-d, 0)``; ``100 * G / (G + L)`` (= 100 - 100 / (1 + G/L)),
  50 if ``G + L = 0``. First value at row p.
* ``macd_{f}_{s}_pct`` [12, 26]: ``100 * (EMA(f) - EMA(s)) / EMA(s)`` of C (MACD in percent
  of price, i.e. the PPO, comparable across pairs and price levels). First at row s - 1.
* ``macd_signal_{f}_{s}_{g}_pct`` [g=9]: EMA(g) of the MACD line; first at row s + g - 2.
* ``macd_hist_{f}_{s}_{g}_pct``: MACD line minus signal.
* ``bb_pctb_{n}_{k}`` [n=20, k=2]: with ``M`` the mean and ``S`` the population standard
  deviation of the last n closes, ``(C - (M - k S)) / (2 k S)``; 0.5 when ``S = 0``
  (every close in the window equal). First at row n - 1.
* ``bb_width_{n}_{k}``: ``2 k S / M``; 0 when ``S = 0``.
* ``vwap_dist_{w}_pct`` [w=30]: ``VWAP = sum(tp * V) / sum(V)`` over the last w rows with
  ``tp = (H + L + C) / 3`` (candle files carry no per-candle VWAP, so the live candle's
  exchange VWAP is not used either); ``100 * (C - VWAP) / VWAP``. First at row w - 1.
* ``roc_{n}_pct`` [n in 1, 5, 15]: ``100 * (C / C[-n] - 1)``. First at row n.
* ``atr_{p}`` [p=14]: Wilder(p) of the true range ``max(H - L, |H - C[-1]|, |L - C[-1]|)``,
  the first row's true range being ``H - L``; in price units (for ATR-multiple stops).
  First at row p - 1.
* ``atr_{p}_pct``: ``100 * atr / C``.
* ``volatility_{w}`` [w=30]: sample standard deviation (ddof 1) of the last w log returns
  ``ln(C / C[-1])``, per row (not annualised); 0 when they are all equal. First at row w.

Warm-up: a feature is NaN before its first row above (``names.first_valid_rows``); from
``names.warmup_rows(settings)`` on (33 with the defaults) every candle feature has a value.

Convergence: the recursive smoothers (RSI, MACD, ATR) never forget their seed exactly; it
keeps ``(1 - a) ** k`` of the weight k rows later. From ``names.convergence_rows(settings)``
on (210 with the defaults) no feature depends on where the series began by more than a
millionth of its starting error (``names.converged_rows`` per feature), so the history that
warms a backtest (every candle before ``--start``) or the live bot (REST OHLC, at most 720
candles) should be at least that long.

Book features (live only; the latest verified book when the candle closes; all NaN without a
two-sided book, or between a ``BookInvalidatedEvent`` and the next snapshot). ``b``/``a``:
best bid/ask, ``mid = (b + a) / 2``; per side over its best N levels (fewer if the book has
fewer), ``Q`` = total quantity, ``P`` = total price * quantity:

* ``book_spread``: ``a - b`` (quote currency); ``book_spread_pct``: ``100 * (a - b) / mid``.
* for each N in ``book_levels`` [5, 10]:
  ``book_imbalance_{N}``: ``(Q_bid - Q_ask) / (Q_bid + Q_ask)``, in [-1, 1];
  ``book_bid_wap_dist_{N}_pct`` / ``book_ask_wap_dist_{N}_pct``: ``100 * (P/Q - mid) / mid``
  of that side (bid <= 0 <= ask); ``book_bid_depth_{N}`` / ``book_ask_depth_{N}``: ``Q`` in
  base units; ``book_bid_depth_quote_{N}`` / ``book_ask_depth_quote_{N}``: ``P`` in quote
  currency.

Trade-flow features (live only; public trades by taker side with exchange time in the
candle's interval; see ``flow`` for when they are NaN because trades may have been missed):

* ``volume_delta``: taker buy quantity minus taker sell quantity (base units).
* ``volume_delta_ratio``: ``volume_delta / (buy + sell)``, in [-1, 1]; NaN without trades.

The research table (``write_feature_table``) has ``time_s`` plus the candle features only.
"""

from gal_friday.features.batch import (
    FeatureTable,
    batch_candle_features,
    read_feature_table,
    write_feature_table,
)
from gal_friday.features.book import book_features
from gal_friday.features.engine import FeatureEngine, PairFeatures
from gal_friday.features.incremental import CandleFeatureState, is_feature_row
from gal_friday.features.names import (
    book_feature_names,
    candle_feature_names,
    converged_rows,
    convergence_rows,
    feature_names,
    first_valid_rows,
    flow_feature_names,
    warmup_rows,
)

__all__ = [
    "CandleFeatureState",
    "FeatureEngine",
    "FeatureTable",
    "PairFeatures",
    "batch_candle_features",
    "book_feature_names",
    "book_features",
    "candle_feature_names",
    "converged_rows",
    "convergence_rows",
    "feature_names",
    "first_valid_rows",
    "flow_feature_names",
    "is_feature_row",
    "read_feature_table",
    "warmup_rows",
    "write_feature_table",
]
