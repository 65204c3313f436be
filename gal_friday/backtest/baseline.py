"""Chance as the baseline of every backtest, and why a run made few or no trades.

Beside the strategy's own figures a backtest reports:

* **Buy-and-hold** of the same pairs over the same period, equal-weighted: each pair gets
  ``capital / pairs`` at the open of its first candle of the period and is sold at its last
  close, a taker fee paid in and out (``close / open * (1 - fee) / (1 + fee) - 1``).
* **Random entries with the same exits** (``seeds`` runs, 200 by default): in each run every
  pair makes as many trades as the strategy made in it, entered at random decision candles
  (a probability was published there, the bracket clears the fee check and the entry
  fills), one position at a time, laid out like random points in the time the strategy spent
  flat (see ``random_runs``), each exited by the strategy's own rules: its stop and target
  (percent or ATR), its maximum holding time, its prediction-reversal exit on the model's own
  probabilities, at its fees, spread and slippage, sized as risk sizes it
  (``risk_per_trade_pct`` over the stop distance, capped by ``max_asset_exposure_pct`` and
  ``max_order_value_usd`` of the initial capital). Only the entry times are chance. The HALT
  rules are not replayed: the count of trades is the strategy's, which already stops where
  its run stopped.
* The strategy's **percentile** in that distribution, for total return and for the mean
  per-trade return (net of fees). The trades are simulated by a vectorised one-position-at-a-
  time replay of the engine's rules (below); the strategy's own entries go through the same
  replay, so both sides of the comparison share its approximations, and ``metrics.json``
  says how closely that replay reproduces the engine's trades (``baseline.replay``).
  The result beats chance when its total-return percentile is at least 95.
* Per-trade **gross and net bps** (mean of ``exit / entry - 1`` and of ``pnl / cost`` over the
  engine's trades), **fees as a share of gross profit** (fees over the summed before-fee P&L
  of the trades that made money before fees) and the **break-even hit rate** of the bracket:
  with a stop ``S`` and target ``T`` below and above the entry (percent of it) and a round
  trip costing ``F`` percent (entry fee, exit fee and the exit's slippage), a share ``p`` of
  targets breaks even when ``p (T - F) = (1 - p) (S + F)``, so ``p = (S + F) / (S + T)``. In
  ATR mode ``S`` and ``T`` are the averages over the strategy's trades (else over every
  decision candle).

The replay (one pair, one position; the engine's book, path and rules, see
``backtest.engine``): an entry decided at the close of candle ``i`` is a limit buy at that
close's bid (a half-spread below it); on arrival, against the next open's book, it crosses
as a taker at the ask when the ask is at or below the limit, else it rests and fills as a
maker at the limit at the first path point trading below it (at it, with ``queue_share``
below 1), unless the entry timeout cancelled it first (at the first point visited from then
on). The path of a candle is open, the extreme nearer the open's side, the other extreme,
close; with ``intrabar = "pessimistic"`` a candle held before it that reaches both the stop and
the target takes the stop. Stop and target trigger on the path price (at the open itself
after a gap, else at their own price; a strategy watching its own bracket reads the bid)
and sell at the bid, less slippage, as takers; the holding limit sells at the bid of the
first point visited after it; a reversal (a probability below ``sell_threshold`` at a
candle's close) sells at the next open's bid. A position still open when the data ends is
no trade, as in the engine. The replay fills every order whole: with ``depth = "volume"``
candles thinner than an order fill it partially in the engine, which the replay does not
model (on the simulator's market the two agree within 0.05 bps per trade; on the
benchmark's thin synthetic candles within ~10 bps; with unlimited depth exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from gal_friday.backtest.data import NS, PairData
from gal_friday.backtest.metrics import Trade
from gal_friday.backtest.signals import PairSignals
from gal_friday.candles import FloatArray, IntArray
from gal_friday.config import Settings

DEFAULT_SEEDS = 200
BEATS_CHANCE_PERCENTILE = 95.0
FEW_TRADES = 10  # fewer trades than this: the console says why
REPLAY_GAP_BPS = 1.0  # the replay this far from the engine's trades: the console says so
_BPS = 1e4
_STOP, _TARGET, _TIME, _REVERSAL = 0, 1, 2, 3
_WINDOW = 64  # candles scanned at once for an exit


@dataclass(frozen=True)
class Rules:
    """The strategy's exit, fee and sizing rules as floats (percent as fractions)."""

    atr_mode: bool
    stop_frac: float
    target_frac: float
    atr_stop: float
    atr_target: float
    atr_feature: str
    min_edge_frac: float
    sell_threshold: float
    reversal: bool
    hold_s: float
    latency_s: float
    timeout_s: float
    slip: float
    maker: float
    taker: float
    risk_frac: float
    asset_frac: float
    order_frac: float  # max_order_value_usd over the initial capital
    market_entry: bool = False  # enters at market, without the fee check (``sma``)
    watch_bid: bool = False  # the strategy watches its bracket on the bid (no venue orders)
    pessimistic: bool = True  # a candle reaching both the stop and the target takes the stop
    touch_fills: bool = False  # a resting limit fills at a touch (``queue_share`` below 1)
    half_spread_bps: dict[str, float | None] | None = None  # per pair; None: one tick

    @classmethod
    def of(cls, settings: Settings, capital: Decimal, *, market_entry: bool = False) -> Rules:
        s, fees, risk = settings.strategy, settings.fees, settings.risk
        bt = settings.backtest
        spreads = {p: bt.half_spread_for(p) for p in settings.pairs}
        return cls(
            market_entry=market_entry,
            watch_bid=not settings.execution.protective_orders,
            pessimistic=bt.intrabar == "pessimistic",
            touch_fills=bt.queue_share < 1,
            half_spread_bps={p: None if v is None else float(v) for p, v in spreads.items()},
            atr_mode=s.stop_mode == "atr",
            stop_frac=float(s.stop_loss_pct) / 100,
            target_frac=float(s.take_profit_pct) / 100,
            atr_stop=float(s.atr_stop_mult),
            atr_target=float(s.atr_take_profit_mult),
            atr_feature=s.atr_feature,
            min_edge_frac=float(s.min_edge_pct) / 100,
            sell_threshold=float(s.sell_threshold),
            reversal=bool(s.exit_on_reversal),
            hold_s=float(s.max_holding_min) * 60,
            latency_s=float(settings.paper.latency_ms) / 1000,
            timeout_s=float(settings.execution.entry_timeout_s),
            slip=float(settings.paper.slippage_bps) / _BPS,
            maker=float(fees.maker_pct) / 100,
            taker=float(fees.taker_pct) / 100,
            risk_frac=float(risk.risk_per_trade_pct) / 100,
            asset_frac=float(risk.max_asset_exposure_pct) / 100,
            order_frac=float(risk.max_order_value_usd / capital),
        )


class Market:
    """One pair's candles as the replay walks them: four path points per candle."""

    def __init__(self, data: PairData, signals: PairSignals, rules: Rules) -> None:
        c = data.candles
        self.n = len(c)
        self.interval_s = float(data.interval_s)
        self.unit = float(10**data.instrument.price_precision)
        self.bps = (rules.half_spread_bps or {}).get(data.pair)
        self.watch_bid = rules.watch_bid
        o, h, low, close = (
            np.asarray(a, dtype=np.float64) for a in (c.open, c.high, c.low, c.close)
        )
        up = close >= o
        self.close = close
        self.points: FloatArray = np.column_stack(
            [o, np.where(up, low, h), np.where(up, h, low), close]
        ).ravel()
        quarter = self.interval_s / 4
        self.times: FloatArray = (
            np.asarray(c.time_s, dtype=np.float64)[:, None] + quarter * np.arange(4)
        ).ravel()
        # a corner equal to the point before it is not a point of the path (nothing moves)
        same = np.zeros((self.n, 4), dtype=bool)
        pts = self.points.reshape(self.n, 4)
        same[:, 1:] = pts[:, 1:] == pts[:, :-1]
        self.visited: np.ndarray = ~same.ravel()
        self.prob: FloatArray = np.asarray(signals.prob, dtype=np.float64)
        # a reversal decided at candle k's close sells at candle k + 1's open (its point 0)
        rev = np.zeros(4 * self.n, dtype=bool)
        if rules.reversal:
            with np.errstate(invalid="ignore"):
                rev[4::4] = self.prob[:-1] < rules.sell_threshold
        self.reversal = rev
        atr = np.full(self.n, np.nan)
        if rules.atr_mode and rules.atr_feature in signals.names:
            atr = np.asarray(signals.features[:, signals.names.index(rules.atr_feature)])
        self.atr: FloatArray = atr.astype(np.float64)
        self.low = low
        self.high = h

    def half(self, price: FloatArray) -> FloatArray:
        """The book's half-spread at path prices: ``half_spread_bps`` of the price rounded
        half up to the tick, at least one tick (none when configured 0; one tick when not
        configured), as the engine's book."""
        if self.bps is None:
            return np.full(np.shape(price), 1 / self.unit)
        if self.bps == 0:
            return np.zeros(np.shape(price))
        ticks = np.floor(np.asarray(price) * self.unit * self.bps / _BPS + 0.5)
        return np.asarray(np.maximum(ticks, 1.0) / self.unit)

    def tick(self, price: FloatArray) -> FloatArray:
        """Prices on the pair's tick grid (half to even, as the strategy quantizes)."""
        return np.asarray(np.round(np.asarray(price) * self.unit) / self.unit)


@dataclass
class Replayed:
    """Trades replayed from decision candles (arrays aligned with the decisions)."""

    decide: IntArray
    filled: np.ndarray
    exit_candle: IntArray  # candle of the exit; -1 when not filled or still open at the end
    kind: IntArray
    entry_px: FloatArray
    exit_px: FloatArray
    fee_in: FloatArray  # fraction of the entry notional
    stop_frac: FloatArray  # the bracket, fractions of the limit price
    target_frac: FloatArray
    size_frac: FloatArray  # entry notional as a fraction of equity

    @property
    def closed(self) -> np.ndarray:
        return self.filled & (self.exit_candle >= 0)

    def gross(self) -> FloatArray:
        return np.asarray(self.exit_px / self.entry_px - 1.0)

    def net(self, taker: float) -> FloatArray:
        """Return on the entry notional after both fees."""
        ratio = self.exit_px / self.entry_px
        return np.asarray(ratio - 1.0 - self.fee_in - ratio * taker)


def bid_at_close(m: Market, decide: IntArray) -> FloatArray:
    """The bid of the book published at the close of candles ``decide``: the strategy's
    entry price (a limit joining the bid) and its brackets' reference."""
    close = m.close[decide]
    return m.tick(close - m.half(close))  # on the grid: it compares equal to prices there


def brackets(m: Market, decide: IntArray, r: Rules) -> tuple[FloatArray, FloatArray]:
    """Stop and target distances (fractions of the limit) of entries at ``decide``."""
    if r.atr_mode:
        atr = m.atr[decide] / bid_at_close(m, decide)
        return atr * r.atr_stop, atr * r.atr_target
    ones = np.ones(len(decide))
    return ones * r.stop_frac, ones * r.target_frac


def eligible(m: Market, r: Rules) -> IntArray:
    """Decision candles where the strategy could enter: a probability was published, a
    bracket exists and its target clears the fee check, and a next candle exists."""
    idx = np.flatnonzero(~np.isnan(m.prob[: max(m.n - 1, 0)]))
    stop, target = brackets(m, idx, r)
    costs = -math.inf if r.market_entry else r.maker + r.taker + r.min_edge_frac
    with np.errstate(invalid="ignore"):
        ok = (stop > 0) & (target > costs)
    return idx[ok]


def enter(
    m: Market, decide: IntArray, r: Rules
) -> tuple[np.ndarray, FloatArray, FloatArray, FloatArray, IntArray]:
    """Entries decided at the closes of candles ``decide``: whether the limit at that bid
    fills on the next candle, its price, fee (fraction), time (s) and the path point after
    it. On arrival (latency after the close, against the book of the next open) as a taker
    at the ask when the ask is at or below the limit; else resting, as a maker at the limit
    at the first path point that trades below it (at it, with ``queue_share`` below 1), until
    the entry timeout cancels it at the first point visited from then on."""
    limit = bid_at_close(m, decide)
    has_next = decide + 1 < m.n
    base = 4 * np.minimum(decide + 1, max(m.n - 1, 0))
    opened = m.points[base]
    ask = opened + m.half(opened)
    if r.market_entry:  # at the next open's ask
        at = m.times[base] + r.latency_s
        return has_next, ask * (1 + r.slip), np.full(len(decide), r.taker), at, base + 1
    taker = has_next & (ask <= limit)
    entry_px = np.where(taker, np.minimum(ask * (1 + r.slip), limit), limit)
    at = np.where(taker, m.times[base] + r.latency_s, np.nan)
    after = np.where(taker, base + 1, -1)
    quarter = m.interval_s / 4
    waiting = has_next & ~taker
    for s in (1, 2, 3):
        a, b = m.points[base + s - 1], m.points[base + s]
        # the path crosses the limit on the way down: a point of its own (a touch)
        with np.errstate(invalid="ignore", divide="ignore"):
            cross_t = (s - 1) * quarter + quarter * np.where(a != b, (a - limit) / (a - b), 0.0)
        crossing = (a > limit) & (b < limit)
        if not r.touch_fills:  # the touch after the timeout cancels before a trade below
            waiting &= ~(crossing & (cross_t >= r.timeout_s))
        t0 = m.times[base + s - 1]
        if r.touch_fills:  # filled where the path first reaches the limit after arriving
            hit = waiting & (np.minimum(a, b) <= limit)
            with np.errstate(invalid="ignore", divide="ignore"):
                up = t0 + quarter * np.where(b != a, (limit - a) / (b - a), 0.0)
            when = np.where(
                crossing, cross_t - (s - 1) * quarter + t0, np.where(b > limit, up, t0 + quarter)
            )
            ahead = np.where(((a > limit) | (b > limit)) & (b != limit), base + s, base + s + 1)
        else:
            hit = waiting & (b < limit)
            when, ahead = m.times[base + s], base + s + 1
        at = np.where(hit, when, at)
        after = np.where(hit, ahead, after)
        waiting &= ~hit
        if s * quarter >= r.timeout_s:
            waiting &= ~m.visited[base + s]  # the first point from the timeout on cancels
        if not waiting.any():
            break
    filled = after >= 0
    return filled, entry_px, np.where(taker, r.taker, r.maker), at, after


def replay(m: Market, decide: IntArray, r: Rules) -> Replayed:
    """Entries decided at candles ``decide`` and their exits (see the module doc)."""
    decide = np.asarray(decide, dtype=np.int64)
    k = len(decide)
    stop_f, target_f = brackets(m, decide, r)
    limit = bid_at_close(m, decide)
    filled, entry_px, fee_in, at, after = enter(m, decide, r)
    stop = m.tick(limit * (1 - stop_f))
    target = m.tick(limit * (1 + target_f))
    # where the path price sets them off: venue orders trigger on the trade (path) price; a
    # strategy watching its own bracket reads the bid, a half-spread below it
    stop_at = stop + (m.half(stop) if m.watch_bid else 0.0)
    target_at = target + (m.half(target) if m.watch_bid else 0.0)
    deadline = at + (r.hold_s if r.hold_s else math.inf)
    exit_g = np.full(k, -1, dtype=np.int64)
    kind = np.full(k, -1, dtype=np.int64)
    exit_px = np.full(k, np.nan)
    todo = np.flatnonzero(filled)
    start = np.maximum(after, 0)
    # candles after the entry's were held before they began: the intrabar rule applies to them
    entry_candle = np.where(filled, (np.maximum(after, 1) - 1) // 4, 0)
    total = 4 * m.n
    span = 4 * _WINDOW
    while len(todo):
        g = start[todo, None] + np.arange(span)[None, :]
        inside = g < total
        gc = np.minimum(g, total - 1)
        px = m.points[gc]
        trig = inside & ((px <= stop_at[todo, None]) | (px >= target_at[todo, None]))
        timed = inside & m.visited[gc] & (m.times[gc] > deadline[todo, None])
        rev = inside & m.reversal[gc]
        # the first event; at one point the venue's triggers come first
        score = np.where(trig, 0, np.where(timed | rev, 1, 2)) + 4 * np.arange(span)[None, :]
        score = np.where(trig | timed | rev, score, np.iinfo(np.int64).max)
        first = score.argmin(axis=1)
        row = np.arange(len(todo))
        found = (trig | timed | rev)[row, first]
        gg = g[row, first]
        p = m.points[np.minimum(gg, total - 1)]
        t_rows = todo[found]
        gg_f, p_f = gg[found], p[found]
        is_trig = trig[row, first][found]
        is_stop = is_trig & (p_f <= stop_at[t_rows])
        at_open = gg_f % 4 == 0
        if r.pessimistic:  # a candle held before it reaching both: its low comes first
            cand = gg_f // 4
            both = (m.low[cand] <= stop_at[t_rows]) & (m.high[cand] >= target_at[t_rows])
            adverse = is_trig & ~at_open & both & (cand > entry_candle[t_rows])
            is_stop |= adverse
        # triggered orders and market exits sell at the bid of the point (a strategy watching
        # its bracket sells where the bid reached it), less slippage
        level = np.where(is_stop, stop_at[t_rows], target_at[t_rows])
        price = np.where(is_trig & ~at_open, level, p_f)
        exit_px[t_rows] = (price - m.half(price)) * (1 - r.slip)
        exit_g[t_rows] = gg_f
        kind[t_rows] = np.where(
            is_trig,
            np.where(is_stop, _STOP, _TARGET),
            np.where(timed[row, first][found], _TIME, _REVERSAL),
        )
        rest = todo[~found]
        start[rest] += span
        todo = rest[start[rest] < total]
    exit_candle = np.where(exit_g >= 0, exit_g // 4, -1)
    size = np.minimum(
        np.minimum(r.risk_frac / np.maximum(stop_f, 1e-12), r.asset_frac), r.order_frac
    )
    return Replayed(
        decide, filled, exit_candle, kind, entry_px, exit_px, fee_in, stop_f, target_f, size
    )


def candidates(m: Market, r: Rules) -> IntArray:
    """The decision candles a random entry may be drawn at: eligible, and its limit fills
    (the strategy's count is of entries that filled)."""
    cand = eligible(m, r)
    filled: IntArray = cand[enter(m, cand, r)[0]]
    return filled


def random_runs(
    m: Market,
    own: Replayed,
    r: Rules,
    seeds: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray, np.ndarray]:
    """``seeds`` runs of as many random non-overlapping entries on one pair as ``own`` (the
    strategy's replayed trades) holds: per run and trade, the net return on equity (sized),
    the net and the gross return on the entry notional, and whether the trade exists (each of
    shape (seeds, count)).

    Placement: the K trades are laid out like K random points in the time the strategy spent
    flat (the candidate candles outside its own trades): the gaps before each entry are the
    uniform spacings of K sorted uniform draws over that free time, each counted from the
    previous trade's exit. So entries are spread over the period as memoryless signals would
    be (as the strategy's own would, were they chance), never bunched behind exits."""
    count = len(own.decide)
    sized = np.zeros((seeds, count))
    net = np.zeros((seeds, count))
    gross = np.zeros((seeds, count))
    ok = np.zeros((seeds, count), dtype=bool)
    cand = candidates(m, r)
    if count == 0 or len(cand) == 0:
        return sized, net, gross, ok
    closed = own.closed
    busy = np.searchsorted(cand, own.exit_candle[closed]) - np.searchsorted(
        cand, own.decide[closed]
    )
    free = np.full(seeds, float(max(len(cand) - int(np.maximum(busy, 0).sum()), count)))
    runs = np.arange(seeds)
    for _ in range(4):  # a run that came short of the count at the end is laid out tighter
        points = np.sort(rng.random((len(runs), count)) * free[runs, None], axis=1)
        gaps = np.diff(points.astype(np.int64), axis=1, prepend=0)
        at = np.zeros(len(runs), dtype=np.int64)  # first candidate position after an exit
        alive = np.ones(len(runs), dtype=bool)
        ended = np.zeros(len(runs), dtype=bool)  # a position still open when the data ends
        for k in range(count):
            pos = at + gaps[:, k]
            alive &= pos < len(cand)
            decide = cand[np.minimum(pos, len(cand) - 1)]
            t = replay(m, decide, r)
            done = alive & t.closed
            ret = t.net(r.taker)
            sized[runs, k] = np.where(done, ret * t.size_frac, 0.0)
            net[runs, k] = np.where(done, ret, 0.0)
            gross[runs, k] = np.where(done, t.gross(), 0.0)
            ok[runs, k] = done
            ended |= alive & (t.exit_candle < 0)
            alive &= t.exit_candle >= 0
            at = np.maximum(np.searchsorted(cand, t.exit_candle), pos + 1)
        made = ok[runs].sum(axis=1)
        short = (made < count) & ~ended
        if not short.any():
            break
        free[runs[short]] *= made[short] / count * 0.97
        runs = runs[short]
    return sized, net, gross, ok


def percentile(value: float, null: FloatArray) -> float:
    """Share of the null below ``value`` (ties count half), in percent."""
    if len(null) == 0:
        return math.nan
    below = float(np.count_nonzero(null < value))
    ties = float(np.count_nonzero(null == value))
    return (below + ties / 2) / len(null) * 100


def buy_and_hold_pct(data: Sequence[PairData], taker_pct: float) -> float:
    """Equal-weight buy-and-hold return over the period, after a taker fee in and out."""
    fee = taker_pct / 100
    rets = [
        float(d.candles.close[-1]) / float(d.candles.open[0]) * (1 - fee) / (1 + fee) - 1
        for d in data
        if len(d.candles)
    ]
    return float(np.mean(rets)) * 100 if rets else 0.0


def breakeven_hit_rate(stop_frac: float, target_frac: float, cost_frac: float) -> float | None:
    """Share of targets (the rest stops) at which a bracket breaks even after costs:
    ``(S + F) / (S + T)``; None for an empty bracket."""
    if stop_frac + target_frac <= 0:
        return None
    return (stop_frac + cost_frac) / (stop_frac + target_frac)


def decision_candles(m: Market, data: PairData, trades: Sequence[Trade]) -> IntArray:
    """The candle at whose close each trade's entry was decided (the last candle ending at or
    before its first fill)."""
    ends = (np.asarray(data.candles.time_s, dtype=np.int64) + data.interval_s) * NS
    at = np.array([t.entry_ns for t in trades], dtype=np.int64)
    return np.maximum(np.searchsorted(ends, at, side="right") - 1, 0).astype(np.int64)


def trade_costs(trades: Sequence[Trade]) -> dict[str, Any]:
    """Per-trade gross and net bps, and fees as a share of gross profit, of the engine's
    trades (``metrics`` keys)."""
    if not trades:
        return {
            "gross_bps_per_trade": None,
            "net_bps_per_trade": None,
            "gross_pnl": 0.0,
            "fees_share_of_gross_profit": None,
        }
    cost = np.array([float(t.qty * t.entry_price) for t in trades])
    proceeds = np.array([float(t.qty * t.exit_price) for t in trades])
    pnl = np.array([float(t.pnl) for t in trades])
    fees = float(sum((t.fees for t in trades), Decimal(0)))
    gross = proceeds - cost
    profit = float(gross[gross > 0].sum())
    return {
        "gross_bps_per_trade": float(np.mean(gross / cost)) * _BPS,
        "net_bps_per_trade": float(np.mean(pnl / cost)) * _BPS,
        "gross_pnl": float(gross.sum()),
        "fees_share_of_gross_profit": fees / profit if profit > 0 else None,
    }


def baseline(
    settings: Settings,
    data: Sequence[PairData],
    signals: dict[str, PairSignals],
    trades: Sequence[Trade],
    total_return_pct: float,
    *,
    capital: Decimal,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    market_entry: bool = False,
) -> dict[str, Any]:
    """The ``baseline`` section of ``metrics.json`` (see the module doc); ``market_entry``
    for a strategy entering at market (``sma``)."""
    r = Rules.of(settings, capital, market_entry=market_entry)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "buy_hold_return_pct": buy_and_hold_pct(data, float(settings.fees.taker_pct)),
        "seeds": seeds,
    }
    sizeds, nets, grosses, oks = [], [], [], []
    own_net, own_ok, own_gross, stops, targets, fee_in = [], [], [], [], [], []
    engine_net, matched = [], 0
    for d in data:
        m = Market(d, signals[d.pair], r)
        mine = [t for t in trades if t.pair == d.pair]
        own = replay(m, decision_candles(m, d, mine), r)
        closed = own.closed
        own_net.append((own.net(r.taker) * own.size_frac)[closed])
        own_ok.append(own.net(r.taker)[closed])
        own_gross.append(own.gross()[closed])
        engine_net.append(np.array([float(t.pnl / (t.qty * t.entry_price)) for t in mine])[closed])
        matched += int(np.count_nonzero(closed))
        stops.append(own.stop_frac[own.filled])
        targets.append(own.target_frac[own.filled])
        fee_in.append(own.fee_in[own.filled])
        if seeds:
            sized, net, gross, ok = random_runs(m, own, r, seeds, rng)
            sizeds.append(sized)
            nets.append(net)
            grosses.append(gross)
            oks.append(ok)
        if not mine:
            idx = eligible(m, r)
            s, t = brackets(m, idx, r)
            stops.append(s)
            targets.append(t)
    stop_all, target_all = np.concatenate(stops), np.concatenate(targets)
    fees_in = np.concatenate(fee_in)
    entry_fee = float(fees_in.mean()) if len(fees_in) else r.taker
    s_avg = float(np.nanmean(stop_all)) if np.isfinite(stop_all).any() else r.stop_frac
    t_avg = float(np.nanmean(target_all)) if np.isfinite(target_all).any() else r.target_frac
    cost = entry_fee + r.taker + r.slip
    out["breakeven_hit_rate"] = breakeven_hit_rate(s_avg, t_avg, cost)
    out["bracket"] = {"stop_pct": s_avg * 100, "target_pct": t_avg * 100, "cost_pct": cost * 100}
    replay_scaled = np.concatenate(own_net) if own_net else np.zeros(0)
    replay_net = np.concatenate(own_ok) if own_ok else np.zeros(0)
    eng = np.concatenate(engine_net) if engine_net else np.zeros(0)
    replay_total = (float(np.prod(1 + replay_scaled)) - 1) * 100
    out["replay"] = {
        "trades": len(trades),
        "replayed": matched,
        "total_return_pct": replay_total,
        "net_bps_per_trade": float(replay_net.mean()) * _BPS if len(replay_net) else None,
        "engine_net_bps_per_trade": float(eng.mean()) * _BPS if len(eng) else None,
        "mean_abs_diff_bps": float(np.mean(np.abs(replay_net - eng))) * _BPS if len(eng) else None,
    }
    out["engine_total_return_pct"] = total_return_pct
    if not trades or not seeds:
        out.update(
            random_percentile=None,
            random_percentile_per_trade=None,
            random_percentile_gross_per_trade=None,
            beats_chance=None,
        )
        return out
    sized = np.concatenate(sizeds, axis=1)
    net = np.concatenate(nets, axis=1)
    gross = np.concatenate(grosses, axis=1)
    ok = np.concatenate(oks, axis=1)
    made = np.maximum(ok.sum(axis=1), 1)
    totals = (np.prod(1 + sized, axis=1) - 1) * 100
    per_trade = net.sum(axis=1) / made * _BPS
    own_per_trade = float(replay_net.mean()) * _BPS if len(replay_net) else math.nan
    out["random"] = {
        "total_return_pct": _quantiles(totals),
        "net_bps_per_trade": _quantiles(per_trade),
        "gross_bps_per_trade": _quantiles(gross.sum(axis=1) / made * _BPS),
        "trades_per_run": float(ok.sum(axis=1).mean()),
    }
    pct = percentile(replay_total, totals)
    out["random_percentile"] = pct
    out["random_percentile_per_trade"] = percentile(own_per_trade, per_trade)
    # before fees too: whether the entries pick moves at all, whatever the fees take
    own_gross_bps = float(np.concatenate(own_gross).mean()) * _BPS if len(replay_net) else math.nan
    out["random_percentile_gross_per_trade"] = percentile(
        own_gross_bps, gross.sum(axis=1) / made * _BPS
    )
    out["beats_chance"] = bool(pct >= BEATS_CHANCE_PERCENTILE)
    return out


def _quantiles(values: FloatArray) -> dict[str, float]:
    q = np.percentile(values, [5, 50, 95])
    return {"p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}


# --- why a run traded little -----------------------------------------------------------------


def why(
    settings: Settings, signals: dict[str, PairSignals], stats: dict[str, Any]
) -> dict[str, Any]:
    """What stood between the signals and trades (``metrics.json``: ``why``): per pair the
    highest probability published against ``buy_threshold`` and how many candles passed it,
    the entries the strategy skipped by reason, the signals risk refused by check, and the
    entries skipped while HALTED."""
    threshold = float(settings.strategy.buy_threshold)
    pairs: dict[str, Any] = {}
    for pair, sig in signals.items():
        prob = np.asarray(sig.prob, dtype=np.float64)
        seen = prob[~np.isnan(prob)]
        pairs[pair] = {
            "predictions": len(seen),
            "max_prob": float(seen.max()) if len(seen) else None,
            "above_threshold": int(np.count_nonzero(seen > threshold)),
        }
    counted = {k: v for k, v in stats.items() if isinstance(v, int)}
    return {
        "buy_threshold": threshold,
        "pairs": pairs,
        "skipped_by_strategy": {
            k.removeprefix("skipped_").replace("_", " "): v
            for k, v in counted.items()
            if k.startswith("skipped_")
        },
        "refused_by_risk": {
            k.removeprefix("rejected_"): v for k, v in counted.items() if k.startswith("rejected_")
        },
        "skipped_halted": counted.get("entries_skipped_halted", 0),
    }


def why_lines(w: dict[str, Any], trades: int) -> list[str]:
    """The console's account of a run with fewer than ``FEW_TRADES`` trades."""
    if trades >= FEW_TRADES:
        return []
    threshold = w["buy_threshold"]
    probs = [
        f"{pair} {p['max_prob']:.3f} ({p['above_threshold']:,} candles above)"
        if p["max_prob"] is not None
        else f"{pair} none published"
        for pair, p in w["pairs"].items()
    ]
    lines = [
        f"why {trades} trade(s): the highest probability reached, against buy_threshold "
        f"{threshold:g}: {', '.join(probs)}"
    ]
    if not any(p["above_threshold"] for p in w["pairs"].values()):
        lines[0] += "; no prediction passed the threshold"
    skipped = w["skipped_by_strategy"]
    if skipped:
        listed = ", ".join(f"{k} {n:,}" for k, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        lines.append(f"  the strategy skipped {sum(skipped.values()):,} entry signal(s): {listed}")
    else:
        lines.append("  the strategy skipped no entry signal")
    if not w["refused_by_risk"]:  # refusals and HALTs have their own lines (report.py)
        lines.append("  risk refused no entry signal")
    return lines


# --- the report's figures and lines -----------------------------------------------------------


def ordinal(pct: float) -> str:
    k = round(pct)
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def chance_lines(metrics: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """Per-trade costs, buy-and-hold and one plain line on whether the result beats chance."""
    lines = []
    if metrics.get("trades"):
        share = metrics.get("fees_share_of_gross_profit")
        be = metrics.get("breakeven_hit_rate")
        br = base["bracket"]
        lines.append(
            f"per trade: {metrics['gross_bps_per_trade']:+.2f} bps before fees, "
            f"{metrics['net_bps_per_trade']:+.2f} bps after; fees "
            + (f"{share:.0%} of gross profit" if share is not None else "with no gross profit")
            + (
                f"; the bracket (stop {br['stop_pct']:.2f} %, target {br['target_pct']:.2f} %, "
                f"costs {br['cost_pct']:.2f} %) breaks even at a {be:.1%} hit rate"
                if be is not None
                else ""
            )
            + (
                f" (won {metrics['win_rate_pct']:.1f} %)"
                if metrics.get("win_rate_pct") is not None
                else ""
            )
        )
    lines.append(
        f"buy-and-hold of the same pairs (equal weight, taker fee in and out): "
        f"{base['buy_hold_return_pct']:+.2f} % (strategy {base['engine_total_return_pct']:+.2f} %)"
    )
    pct = base.get("random_percentile")
    if pct is None:
        if base["seeds"] and not metrics.get("trades"):
            lines.append("chance: no trades, nothing to compare with random entries")
        return lines
    rep = base["replay"]
    gap = rep["mean_abs_diff_bps"]
    if (gap is not None and gap > REPLAY_GAP_BPS) or rep["replayed"] < rep["trades"]:
        lines.append(
            f"note: the replay the random runs use reproduces {rep['replayed']:,} of the "
            f"{rep['trades']:,} trades, {gap or 0:.1f} bps per trade from the engine's (thin "
            "candles fill orders partially; the replay fills them whole): the percentiles "
            "compare the strategy's replay with the random runs'"
        )
    rnd = base["random"]["total_return_pct"]
    verdict = (
        "beats chance"
        if base["beats_chance"]
        else f"NOT distinguishable from chance (needs >= {BEATS_CHANCE_PERCENTILE:.0f}th)"
    )
    lines.append(
        f"chance: the strategy's return is at the {ordinal(pct)} percentile of "
        f"{base['seeds']} random-entry runs with the same exits (median {rnd['median']:+.2f} %, "
        f"95th {rnd['p95']:+.2f} %), its per-trade return at the "
        f"{ordinal(base['random_percentile_per_trade'])} (before fees at the "
        f"{ordinal(base['random_percentile_gross_per_trade'])}): {verdict}"
    )
    return lines


def chance_report(
    settings: Settings,
    data: Sequence[PairData],
    signals: dict[str, PairSignals],
    metrics: dict[str, Any],
    trades: Sequence[Trade],
    stats: dict[str, Any],
    *,
    capital: Decimal,
    seeds: int = DEFAULT_SEEDS,
    market_entry: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """Add the per-trade figures to ``metrics``; the report's ``baseline`` and ``why``
    sections and the console's lines about them."""
    metrics.update(trade_costs(trades))
    base = baseline(
        settings,
        data,
        signals,
        trades,
        float(metrics["total_return_pct"]),
        capital=capital,
        seeds=seeds,
        market_entry=market_entry,
    )
    metrics["breakeven_hit_rate"] = base["breakeven_hit_rate"]
    w = why(settings, signals, stats)
    return {"baseline": base, "why": w}, [
        *chance_lines(metrics, base),
        *why_lines(w, len(trades)),
    ]
