"""The backtest loop: candles on a simulated clock through the live trading modules.

Every decision goes through the code that trades live: ``StrategyArbitrator`` (or another
strategy with its interface), ``RiskManager``, ``ExecutionHandler`` on a paper venue
(``MatchingEngine``: maker/taker fees, slippage, latency, touch-or-cross limit fills, partial
fills, triggered stop-loss / take-profit) and ``PortfolioManager``, wired on a ``DirectBus``.
Features and predictions are computed for the whole run beforehand (``signals``); row ``i`` is
published only at the close of candle ``i``.

Time. Candle ``i`` of a pair covers ``[open, open + interval)``. At ``open + interval`` (its
close) the pair's book (one level at the close), its feature row and its prediction are
published; orders sent then reach the venue ``latency`` later and fill on later candles.

Intrabar path (an assumption: candles do not say in which order their prices came). A candle
is replayed as one-level books at ``open``, then ``low`` before ``high`` when it closed up
(``high`` before ``low`` when it closed down), then ``close``, evenly spaced in time over the
interval. Prices move continuously between these points, so every working limit or trigger
price lying between two of them is visited too, in path order: a stop is filled at its
trigger (less slippage), not at the candle's low. Each point offers the candle's volume
divided by the number of points (``depth="unlimited"`` offers any quantity), so large orders
fill partially. Bid and ask are both the path price: the spread is modelled by
``paper.slippage_bps``.

Speed. Most candles cannot matter: no prediction crosses a threshold and no working order or
held position can be reached. The loop jumps between candles that have a decision to publish
and, while a pair has working orders or a position, checks each of its candles against the
prices and times the venue and strategy wait for (three float comparisons) before replaying
it. The portfolio is marked at every interaction, at every replayed point, and at each UTC
midnight while a position is held (so daily drawdowns start from a fresh equity).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from gal_friday.backtest.data import NS, PairData
from gal_friday.backtest.signals import PairSignals
from gal_friday.backtest.venue import INF, BacktestVenue, DirectBus
from gal_friday.config import Settings
from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    FeatureEvent,
    InstrumentEvent,
    OrderType,
    PredictionEvent,
    Side,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.portfolio import PortfolioManager
from gal_friday.risk import RiskManager
from gal_friday.strategy import StrategyArbitrator

log = logging.getLogger(__name__)
_DAY_NS = 86_400 * NS
_UNLIMITED = 10**30
StrategyFactory = Callable[[Settings, DirectBus], StrategyArbitrator]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill as the venue reported it (quote-currency fee)."""

    ts_ns: int
    pair: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    order_type: OrderType
    client_order_id: str
    signal_id: str


@dataclass
class RunOutput:
    """What a run produced, before metrics: fills, the final portfolio and counters."""

    fills: list[Fill]
    final_cash: Decimal
    final_equity: Decimal
    fees_paid: Decimal
    held: dict[str, Decimal]
    stats: dict[str, int] = field(default_factory=dict)


def default_strategy(settings: Settings, bus: DirectBus) -> StrategyArbitrator:
    return StrategyArbitrator(settings.strategy, settings.fees, bus,
                              venue_brackets=settings.execution.protective_orders)


class _Pair:
    """One pair's candles as plain lists (fast scalar access) and its watch state."""

    def __init__(self, data: PairData, signals: PairSignals, depth: str) -> None:
        c = data.candles
        self.name = data.pair
        self.spec = data.instrument
        self.interval_ns = data.interval_s * NS
        self.open_ns: list[int] = (c.time_s * NS).tolist()
        self.end_ns = [t + self.interval_ns for t in self.open_ns]
        self.o, self.h = c.open.tolist(), c.high.tolist()
        self.l, self.c = c.low.tolist(), c.close.tolist()
        self.v = c.volume.tolist()
        self.prob = signals.prob.tolist()
        self.signals = signals
        self.unit: int = 10**self.spec.price_precision
        self.qunit: int = 10**self.spec.qty_precision
        self.unlimited = depth == "unlimited"
        self.lo, self.hi, self.when = -INF, INF, INF
        self.deadline = INF  # earliest entry timeout of a working entry

    @property
    def tracked(self) -> bool:
        return self.lo > -INF or self.hi < INF or self.when < INF

    def scaled(self, price: float) -> int:
        return round(price * self.unit)

    def depth(self, i: int, points: int) -> int:
        return _UNLIMITED if self.unlimited else int(self.v[i] / points * self.qunit)

    def last_close(self, ts_ns: int) -> float | None:
        """Close of the last candle that ended at or before ``ts_ns``."""
        j = bisect.bisect_right(self.end_ns, ts_ns) - 1
        return self.c[j] if j >= 0 else None


def intrabar_corners(o: int, h: int, low: int, c: int) -> list[int]:
    """Open, the extreme nearer to the open's side first, the other extreme, close: low before
    high when the candle closed up (or flat), high before low when it closed down."""
    return [o, low, h, c] if c >= o else [o, h, low, c]


def next_point(price: int, target: int, extra: Sequence[int]) -> int:
    """The first of ``extra`` strictly between ``price`` and ``target`` going towards
    ``target``, else ``target``: the next price the continuous path visits."""
    if target > price:
        ahead = [x for x in extra if price < x < target]
        return min(ahead) if ahead else target
    ahead = [x for x in extra if target < x < price]
    return max(ahead) if ahead else target


class BacktestEngine:
    """Runs pairs' candles and signals through the trading modules; see the module doc."""

    def __init__(self, settings: Settings, data: Sequence[PairData],
                 signals: dict[str, PairSignals], *, capital: Decimal,
                 strategy: StrategyFactory = default_strategy,
                 depth: Literal["volume", "unlimited"] = "volume",
                 progress: Progress | None = None) -> None:
        execution = settings.execution.model_copy(update={"reconcile_interval_s": 0.0})
        paper = settings.paper.model_copy(update={"initial_cash_usd": capital})
        self.settings = settings.model_copy(update={"execution": execution, "paper": paper})
        self.pairs = [_Pair(d, signals[d.pair], depth) for d in data]
        self.by_name = {p.name: p for p in self.pairs}
        self.capital = capital
        self.progress = progress
        self.now = min(p.open_ns[0] for p in self.pairs if p.open_ns)
        self.bus = DirectBus()
        s = self.settings
        self.venue = BacktestVenue(s.paper, s.fees, clock_ns=self._clock)
        self.venue.attach(self.bus)
        self.handler = ExecutionHandler(s.execution, self.venue, self.bus, clock_ns=self._clock)
        self.portfolio = PortfolioManager(capital, pairs=[p.name for p in self.pairs],
                                          start_ts_ns=self.now)
        self.portfolio.attach(self.bus)
        self.risk = RiskManager(s.risk, self.bus, self.portfolio.snapshot,
                                taker_fee_pct=s.fees.taker_pct, clock=self._clock)
        self.strategy = strategy(s, self.bus)
        self.strategy.attach()
        self.handler.attach()
        self.bus.subscribe(ExecutionReportEvent, self._on_report, name="backtest-recorder")
        self.fills: list[Fill] = []
        self.held: dict[str, Decimal] = {}
        self.stats = {"candles": sum(len(p.open_ns) for p in self.pairs), "decisions": 0,
                      "replayed_candles": 0, "books": 0,
                      "entries_skipped_halted": 0}
        self._hold_ns = int(s.strategy.max_holding_min * 60 * NS)
        self._next_midnight = (self.now // _DAY_NS + 1) * _DAY_NS

    def _clock(self) -> int:
        return self.now

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> RunOutput:
        await self.venue.start(self.handler.on_venue_report)
        for pair in self.pairs:
            await self.bus.publish(InstrumentEvent(pair.name, pair.spec))
        await self._loop(*self._timeline())
        await self._finish()
        snap = self.portfolio.snapshot()
        return RunOutput(self.fills, snap.cash, snap.equity, snap.fees_paid,
                         {k: v for k, v in self.held.items() if v}, self._stats())

    def _timeline(self) -> tuple[list[int], list[int], list[int]]:
        """Every candle of every pair in time order (pairs in configured order at equal
        times), and the positions holding a decision (a probability to publish)."""
        keys = sorted((t, p, i) for p, pair in enumerate(self.pairs)
                      for i, t in enumerate(pair.end_ns))
        m_pair = [k[1] for k in keys]
        m_idx = [k[2] for k in keys]
        cands = [k for k, (p, i) in enumerate(zip(m_pair, m_idx, strict=True))
                 if not math.isnan(self.pairs[p].prob[i])]
        return m_pair, m_idx, cands

    async def _loop(self, m_pair: list[int], m_idx: list[int], cands: list[int]) -> None:
        n, ci, k = len(m_pair), 0, 0
        tick = max(1, n // 200)
        next_tick = tick
        pairs = self.pairs
        while k < n:
            if not any(p.tracked for p in pairs):
                if ci >= len(cands):
                    break
                k = max(k, cands[ci])
            pair = pairs[m_pair[k]]
            i = m_idx[k]
            if pair.tracked and (pair.l[i] <= pair.lo or pair.h[i] >= pair.hi
                                 or pair.end_ns[i] >= pair.when):
                await self._replay(pair, i)
            if self.held and pair.end_ns[i] >= self._next_midnight:
                self._mark_midnight(pair.end_ns[i])
            if ci < len(cands) and cands[ci] == k:
                ci += 1
                if self._wants(pair, pair.prob[i]):
                    await self._decide(pair, i)
            k += 1
            if k >= next_tick and self.progress is not None:
                self.progress(k, n)
                next_tick = k + tick
        if self.progress is not None:
            self.progress(n, n)

    def _wants(self, pair: _Pair, prob: float) -> bool:
        """Whether the strategy could act on this probability (exactly its own gates: an
        entry needs a flat pair and ``prob > buy``, an exit a position and ``prob < sell``)."""
        state = self.strategy.pairs.get(pair.name)
        if state is not None and state.pending is not None:
            return False
        s = self.settings.strategy
        if state is not None and state.qty > 0:
            return s.exit_on_reversal and prob < s.sell_threshold
        if prob > s.buy_threshold and self.risk.halted:
            self.stats["entries_skipped_halted"] += 1  # risk would reject it: HALTED
            return False
        return prob > s.buy_threshold

    # --- publishing ----------------------------------------------------------------------------

    def _book(self, pair: _Pair, price: int, qty: int, ts: int) -> BookEvent:
        level = ((price, qty),)
        self.stats["books"] += 1
        return BookEvent(pair.name, level, level, pair.spec.price_precision,
                         pair.spec.qty_precision, 0, 0, True, "", ts)

    async def _decide(self, pair: _Pair, i: int) -> None:
        """Publish the close book, feature row and prediction of candle ``i``."""
        ts = pair.end_ns[i]
        self.now = max(self.now, ts)
        self.stats["decisions"] += 1
        self._mark_others(pair, ts)
        sig = pair.signals
        await self.bus.publish(self._book(pair, pair.scaled(pair.c[i]), pair.depth(i, 4), ts))
        await self.bus.publish(FeatureEvent(pair.name, pair.open_ns[i], sig.names,
                                            tuple(sig.features[i].tolist())))
        await self.bus.publish(PredictionEvent(pair.name, ts, sig.model_id, pair.prob[i],
                                               pair.open_ns[i], 0))
        await self._settle()
        self._rewatch()

    async def _replay(self, pair: _Pair, i: int) -> None:
        """Replay candle ``i`` along its intrabar path (see the module doc). The prices of
        working orders are read again at every point, so an order placed during the candle
        (e.g. a stop after the entry filled) is visited on the rest of the path."""
        depth = pair.depth(i, 4)
        if depth <= 0:
            return
        self.stats["replayed_candles"] += 1
        corners = intrabar_corners(pair.scaled(pair.o[i]), pair.scaled(pair.h[i]),
                                   pair.scaled(pair.l[i]), pair.scaled(pair.c[i]))
        quarter = pair.interval_ns // 4
        times = [pair.open_ns[i] + k * quarter for k in range(4)]
        price = corners[0]
        await self._visit(pair, price, times[0], depth)
        for k in range(1, 4):
            a, b, ta = corners[k - 1], corners[k], times[k - 1]
            while price != b:
                if not self._reachable(pair, corners[k:], pair.end_ns[i]):
                    self._rewatch()
                    return  # nothing left in this candle can fill, trigger or time out
                price = next_point(price, b, self._order_prices(pair))
                ts = ta + quarter * (price - a) // (b - a)
                await self._visit(pair, price, ts, depth)
        if pair.when < pair.end_ns[i]:  # an order or cancel due before the candle ends
            self.now = max(self.now, pair.end_ns[i] - 1)
            await self.venue.advance(self.now)
            await self._settle()
        self._rewatch()

    async def _visit(self, pair: _Pair, price: int, ts: int, depth: int) -> None:
        """The market at one point of the path: a one-level book at ``price``."""
        self.now = max(self.now, ts)
        if pair.deadline <= ts:
            await self.handler.tick(ts)  # entry timeouts, as the live timer would
        await self.bus.publish(self._book(pair, price, depth, ts))
        await self._settle()
        self._watch(pair)

    @staticmethod
    def _reachable(pair: _Pair, rest: list[int], end_ns: int) -> bool:
        if pair.when <= end_ns:
            return True
        lo, hi = pair.lo * pair.unit, pair.hi * pair.unit
        return any(p <= lo or p >= hi for p in rest)

    def _order_prices(self, pair: _Pair) -> list[int]:
        """Scaled prices of the pair's working orders (and the strategy's own brackets when
        the venue holds none)."""
        prices = self.venue.prices(pair.name)
        state = self.strategy.pairs.get(pair.name)
        if not self.strategy.venue_brackets and state is not None and state.qty > 0:
            prices += [state.stop, state.target]
        return [int(p * pair.unit) for p in prices]

    async def _settle(self) -> None:
        """Let the handler's spawned tasks (protection, one-cancels-other, exits) run until
        none can progress without the market moving on: until the loop has nothing ready."""
        tasks = self.handler._tasks
        if tasks:
            ready = getattr(asyncio.get_running_loop(), "_ready", None)
            for _ in range(64):
                await asyncio.sleep(0)
                if not tasks or (ready is not None and not ready):
                    break
        if len(self.venue.engine._orders) > 64:
            self.venue.forget_finished(self.handler)

    def _rewatch(self) -> None:
        for pair in self.pairs:
            self._watch(pair)

    def _watch(self, pair: _Pair) -> None:
        lo, hi, when = self.venue.watch(pair.name, self.now)
        deadline = INF
        for coid in self.venue.working.get(pair.name, {}):
            order = self.handler.orders.get(coid)
            if order is not None and order.deadline_ns and order.working:
                deadline = min(deadline, float(order.deadline_ns))
        pair.deadline = deadline
        when = min(when, deadline)
        state = self.strategy.pairs.get(pair.name)
        if state is not None and state.qty > 0:
            if self._hold_ns:
                when = min(when, float(state.opened_ns + self._hold_ns + 1))
            if not self.strategy.venue_brackets:
                lo, hi = max(lo, float(state.stop)), min(hi, float(state.target))
        pair.lo, pair.hi, pair.when = lo, hi, when

    # --- marks and records ---------------------------------------------------------------------

    def _mark_others(self, pair: _Pair, ts: int) -> None:
        """Value the other held pairs at their latest close before a decision."""
        for name in self.held:
            other = self.by_name[name]
            if other is not pair:
                price = other.last_close(ts)
                if price is not None:
                    self.portfolio.set_mark(name, _dec(price, other.unit), ts)

    def _mark_midnight(self, ts: int) -> None:
        """Mark held pairs just before the UTC midnight(s) passed, so the portfolio's day
        and week references start from the equity at the turn of the day."""
        midnight = ts // _DAY_NS * _DAY_NS
        for name in self.held:
            other = self.by_name[name]
            price = other.last_close(midnight)
            if price is not None:
                self.portfolio.set_mark(name, _dec(price, other.unit), midnight - 1)
        self._next_midnight = midnight + _DAY_NS

    async def _on_report(self, r: ExecutionReportEvent) -> None:
        if not r.last_fill_qty or r.last_fill_price is None:
            return
        self.fills.append(Fill(r.ts_ns, r.pair, r.side, r.last_fill_qty, r.last_fill_price,
                               r.fee, r.order_type, r.client_order_id, r.signal_id or ""))
        sign = 1 if r.side is Side.BUY else -1
        qty = self.held.get(r.pair, Decimal(0)) + sign * r.last_fill_qty
        if qty:
            self.held[r.pair] = qty
        else:
            self.held.pop(r.pair, None)

    async def _finish(self) -> None:
        """Settle what is left and mark every held pair at its last close."""
        await self._settle()
        for pair in self.pairs:
            if pair.name in self.held and pair.c:
                self.portfolio.set_mark(pair.name, _dec(pair.c[-1], pair.unit),
                                        max(self.now, pair.end_ns[-1]))
        tasks = list(self.handler._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stats(self) -> dict[str, int]:
        return {**self.stats, "orders": self.venue.submitted,
                "signals_approved": self.risk.approved, "signals_rejected": self.risk.rejected,
                "events": self.bus.published}


def _dec(price: float, unit: int) -> Decimal:
    """A float candle price as the exact Decimal on the pair's price grid."""
    return Decimal(round(price * unit)) / unit
