"""The built-in synthetic market: a seeded order-flow model per pair.

Each pair's book is driven by individual order events, as on a real venue:

* limit orders arrive mostly near the touch (sometimes improving the spread, sometimes
  joining a queue, sometimes resting deep in the book), with lognormal sizes, often round;
* cancellations hit near-touch queues more than deep ones, in part or in full;
* market orders (and marketable limit orders) walk the opposite side and print one trade per
  level they take.

A latent fair value follows a random walk whose volatility clusters (GARCH(1,1) on every
step, times a slowly switching calm/normal/hot regime), and the order flow leans towards it:
when the fair value is above the mid, buyers take more, bids improve and asks are pulled. So
the mid is a random walk with clustered volatility, yet the book is never crossed (no event
can place a resting order through the opposite touch), and each side keeps at least
``MIN_LEVELS`` levels so depth 10/25/100 subscriptions always have content.

Everything is deterministic for a seed: each pair draws from its own ``random.Random`` seeded
with ``"<seed>:<symbol>"``, and a step depends only on the model's state, never on the clock
(``ts_ns`` only stamps the prints). ``generate_book_messages`` uses that to produce benchmark
streams quickly.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gal_friday.sim import wire
from gal_friday.sim.depth import DepthView, FullBook
from gal_friday.sim.history import generate_history
from gal_friday.sim.instruments import INSTRUMENTS, SimInstrument
from gal_friday.sim.source import MarketSink, MarketSource
from gal_friday.sim.tape import Tape, Trade

MIN_LEVELS = 130
MAX_LEVELS = 260
INITIAL_LEVELS = 180
MAX_SWEEP = 8  # levels one market order may take
# calm, normal, hot volatility multipliers, scaled so their mean square is one (the profile's
# daily volatility is the long-run average)
_REGIMES = tuple(m / math.sqrt((0.36 + 1.0 + 4.84) / 3) for m in (0.6, 1.0, 2.2))
_REGIME_MEAN_S = 300.0  # regimes last five minutes on average
_GARCH_ALPHA, _GARCH_BETA = 0.01, 0.985
_BENCH_EPOCH_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, for reproducible stamps
DEFAULT_PAIRS = ("XRP/USD", "DOGE/USD")

Fill = tuple[int, int, str, str]  # price, qty, taker side, taker order type


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


@dataclass
class _Fair:
    """The latent fair value (scaled price, float) and its volatility state."""

    price: float
    sigma: float  # per-step standard deviation of log returns at unit intensity
    floor: float
    ceiling: float
    p_switch: float
    h: float = 1.0  # GARCH variance multiplier, mean 1
    regime: float = _REGIMES[1]

    @property
    def intensity(self) -> float:
        return math.sqrt(self.h) * self.regime

    def move(self, rng: random.Random) -> None:
        """One step of the volatility-clustered random walk, pulled back inside the bounds."""
        if rng.random() < self.p_switch:
            self.regime = rng.choice(_REGIMES)
        z = rng.gauss(0.0, 1.0)
        if rng.random() < 0.002:
            z *= 4.0  # rare jumps: fat tails
        ret = self.sigma * self.intensity * z
        if self.price < self.floor:
            ret += self.sigma * 0.5
        elif self.price > self.ceiling:
            ret -= self.sigma * 0.5
        self.price *= math.exp(ret)
        self.h = (1 - _GARCH_ALPHA - _GARCH_BETA) + (_GARCH_ALPHA * z * z + _GARCH_BETA) * self.h
        self.h = min(self.h, 25.0)


class PairModel:
    """The order-flow model of one pair; ``step`` applies one message's worth of events."""

    def __init__(self, inst: SimInstrument, seed: int, step_s: float) -> None:
        profile = inst.profile
        if profile is None:
            raise ValueError(f"no market profile for {inst.symbol}")
        self.inst = inst
        self.rng = random.Random(f"{seed}:{inst.symbol}")
        self.book = FullBook(inst.symbol, inst.price_precision, inst.qty_precision)
        self.tick = inst.tick
        self.grain = profile.grain_ticks * inst.tick
        self.unit: int = 10**inst.qty_precision
        self.qmin = inst.qty_min_scaled
        self.typical = float(profile.typical_qty)
        self.half = 0.6 * self.grain  # fair-to-quote distance of the most eager makers
        start = float(inst.price_scaled(profile.start_price))
        sigma = profile.daily_volatility / math.sqrt(86400.0 / step_s)
        self.fair = _Fair(
            start,
            sigma,
            float(inst.price_scaled(profile.price_floor)),
            float(inst.price_scaled(profile.price_ceiling)),
            min(1.0, step_s / _REGIME_MEAN_S),
        )

    def seed_book(self, mid: int, ts_s: int) -> None:
        """Build the opening book around ``mid``: a spread of about two grains, then levels
        at irregular gaps, sizes growing with distance from the touch."""
        self.fair.price = float(mid)
        half = max(self.tick, self.grain)
        for is_bid, sign in ((True, -1), (False, 1)):
            price = mid + sign * half
            for i in range(INITIAL_LEVELS):
                self.book.set(is_bid, price, self._size(1.0 + i / 40), ts_s)
                price += sign * self._gap()
                if price <= 0:
                    break

    # --- sizes and gaps ----------------------------------------------------------------------

    def _gap(self) -> int:
        """Distance to the next deeper level: a tick at least, usually a grain or two."""
        return self.tick * (1 + int(self.rng.expovariate(1.0) * 1.5 * self.grain / self.tick))

    def _size(self, factor: float) -> int:
        """A lognormal order size (scaled); 40% whole units, 15% two decimals, never below
        the pair's minimum order."""
        rng = self.rng
        units = self.typical * factor * math.exp(rng.gauss(0.0, 0.9))
        style = rng.random()
        if style < 0.4:
            scaled = max(1, round(units)) * self.unit
        elif style < 0.55:
            scaled = round(units * 100) * (self.unit // 100)
        else:
            scaled = int(units * self.unit)
        return max(scaled, self.qmin)

    # --- one step ----------------------------------------------------------------------------

    def step(self, ts_ns: int) -> list[Fill]:
        """Move the fair value, apply one to three order events, keep the depth in range."""
        rng = self.rng
        ts_s = ts_ns // 1_000_000_000
        self.fair.move(rng)
        lam = self.fair.intensity
        events = 1 + (rng.random() < 0.12 * lam) + (rng.random() < 0.04 * lam)
        fills: list[Fill] = []
        for _ in range(events):
            self._event(ts_s, fills)
        self._housekeep(ts_s)
        return fills

    def _deviation(self) -> float:
        """Fair value minus mid, in grains: positive means the book is too low."""
        mid = (self.book.bids.best() + self.book.asks.best()) / 2
        return (self.fair.price - mid) / self.grain

    def _event(self, ts_s: int, fills: list[Fill]) -> None:
        dev = self._deviation()
        w_take = 0.012 * self.fair.intensity + 0.02 * min(abs(dev), 3.0)
        u = self.rng.random() * (0.92 + w_take)
        if u < 0.5:
            self._add(dev, ts_s)
        elif u < 0.92:
            self._cancel(ts_s)
        else:
            self._take(dev, ts_s, fills)

    def _add(self, dev: float, ts_s: int) -> None:
        """A resting limit order placed relative to the fair value: mostly a little beyond
        half a grain from it, sometimes anywhere in the book's range; never through the
        opposite touch (an order that would cross joins just inside it instead)."""
        rng, book, tick = self.rng, self.book, self.tick
        is_bid = rng.random() < 0.5 + max(-0.2, min(0.2, 0.1 * dev))
        own, opp = book.side(is_bid), book.side(not is_bid)
        fair = self.fair.price
        if rng.random() < 0.7:
            distance = self.half + rng.expovariate(1.0) * 2.0 * self.grain
            factor = 1.0
        else:
            extent = max(abs(own.worst() - fair), 60.0 * self.grain)
            distance = self.half + rng.random() * extent
            factor = 1.0 + distance / (40 * self.grain)
        if is_bid:
            price = int(fair - distance) // tick * tick
            price = min(price, opp.best() - tick)
        else:
            price = -(-int(fair + distance) // tick) * tick
            price = max(price, opp.best() + tick)
        if price <= 0:
            return
        book.set(is_bid, price, own.qty.get(price, 0) + self._size(factor), ts_s)

    def _cancel(self, ts_s: int) -> None:
        """Pull part or all of a queue. Quotes left on the wrong side of a moving fair value
        are pulled first; otherwise near-touch queues churn more than deep ones."""
        rng, book = self.rng, self.book
        fair = self.fair.price
        stale_bid = (book.bids.best() - fair) / self.grain
        stale_ask = (fair - book.asks.best()) / self.grain
        if max(stale_bid, stale_ask) > 0.3 and rng.random() < 0.8:
            is_bid = stale_bid > stale_ask
            rank = 0
        else:
            is_bid = rng.random() < 0.5
            side = book.side(is_bid)
            if rng.random() < 0.6:
                rank = min(int(rng.expovariate(1 / 3.0)), len(side) - 1)
            else:
                rank = rng.randrange(len(side))
        side = book.side(is_bid)
        if len(side) <= MIN_LEVELS:
            self._add_deep(is_bid, ts_s)
            return
        price = side.price_at(rank)
        left = 0
        if rng.random() >= 0.45:
            left = side.qty[price] - self._size(1.0)
            if left < self.qmin:
                left = 0
        book.set(is_bid, price, left, ts_s)

    def _take(self, dev: float, ts_s: int, fills: list[Fill]) -> None:
        """A market or marketable limit order walking the opposite side; takers lean
        towards the fair value."""
        rng, book = self.rng, self.book
        buy = rng.random() < _sigmoid(1.5 * dev)
        side, ord_type = ("buy", "market") if buy else ("sell", "market")
        opp = book.side(not buy)
        qty = self._size(1.3)
        limit: int | None = None
        if rng.random() < 0.35:
            ord_type = "limit"
            reach = self.tick * int(rng.expovariate(1.0) * self.grain / self.tick)
            limit = opp.best() + reach if buy else opp.best() - reach
        swept = 0
        while qty > 0 and swept < MAX_SWEEP and len(opp) > MIN_LEVELS // 2:
            price = opp.best()
            if limit is not None and (price > limit if buy else price < limit):
                break
            available = opp.qty[price]
            fill = min(available, qty)
            fills.append((price, fill, side, ord_type))
            book.set(not buy, price, available - fill, ts_s)
            qty -= fill
            swept += 1
        if limit is not None and qty >= self.qmin and limit > 0:
            crosses = limit >= opp.best() if buy else limit <= opp.best()
            if not crosses:  # the remainder rests at its limit, now the best price
                own = book.side(buy)
                book.set(buy, limit, own.qty.get(limit, 0) + qty, ts_s)

    def _add_deep(self, is_bid: bool, ts_s: int) -> None:
        side = self.book.side(is_bid)
        price = side.worst() + (-1 if is_bid else 1) * self._gap()
        if price > 0:
            depth = len(side)
            self.book.set(is_bid, price, side.qty.get(price, 0) + self._size(1 + depth / 40), ts_s)

    def _housekeep(self, ts_s: int) -> None:
        """Keep each side between MIN_LEVELS and MAX_LEVELS levels, changing only its far end
        (invisible to shallow subscribers, as deep-book churn is on a real venue)."""
        for is_bid in (True, False):
            side = self.book.side(is_bid)
            if len(side) < MIN_LEVELS:
                self._add_deep(is_bid, ts_s)
            elif len(side) > MAX_LEVELS:
                self.book.set(is_bid, side.worst(), 0, ts_s)


class SyntheticMarket(MarketSource):
    """Seeded synthetic market for the given pairs, with a day of back-history.

    ``rate`` is the number of model steps (about one book message each) per second per pair;
    it also scales the per-step volatility, so the market moves as much per minute at any
    rate. ``start_ns`` is when the live market opens (the history ends there); it defaults to
    now. ``history_hours=0`` skips the back-history (benchmarks).
    """

    def __init__(
        self,
        seed: int = 7,
        symbols: Iterable[str] = DEFAULT_PAIRS,
        *,
        rate: float = 20.0,
        start_ns: int | None = None,
        history_hours: float = 24.0,
    ) -> None:
        super().__init__()
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.seed = seed
        self.rate = rate
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.models: dict[str, PairModel] = {}
        for symbol in symbols:
            inst = INSTRUMENTS.get(symbol)
            if inst is None:
                raise ValueError(
                    f"the simulator has no instrument {symbol!r}; known: {', '.join(INSTRUMENTS)}"
                )
            self._open(inst, history_hours)

    def _open(self, inst: SimInstrument, history_hours: float) -> None:
        """Generate the pair's back-history, then open its book where the history ended."""
        profile = inst.profile
        assert profile is not None  # every table entry has one
        first_id = 40_000_000 + (self.seed * 7919) % 1_000_000
        tape = Tape(first_id, inst.price_precision, inst.qty_precision)
        history = generate_history(inst, self.seed, self.start_ns, history_hours)
        tape.load_history(history.ts_ns, history.price, history.qty, history.buy, history.market)
        model = PairModel(inst, self.seed, 1.0 / self.rate)
        model.seed_book(inst.price_scaled(profile.start_price), self.start_ns // 1_000_000_000)
        self.instruments[inst.symbol] = inst
        self.books[inst.symbol] = model.book
        self.tapes[inst.symbol] = tape
        self.models[inst.symbol] = model

    def step(self, symbol: str, ts_ns: int) -> list[Trade]:
        """Advance one pair by one step; the book changes in place, prints go on the tape."""
        fills = self.models[symbol].step(ts_ns)
        tape = self.tapes[symbol]
        return [tape.add(ts_ns, price, qty, side, ord_type) for price, qty, side, ord_type in fills]

    async def run(self, sink: MarketSink) -> None:
        """Step every pair ``rate`` times a second on a short timer. A late timer catches
        up by at most twice a tick's worth of steps; time beyond that is skipped, never
        queued, so a busy process sees a slower market rather than a blocked event loop."""
        loop = asyncio.get_running_loop()
        tick = max(0.005, min(0.05, 1.0 / self.rate))
        max_burst = max(2, math.ceil(self.rate * tick * 2))
        started, done = loop.time(), 0
        while True:
            await asyncio.sleep(tick)
            due = int((loop.time() - started) * self.rate) - done
            if due > max_burst:
                done += due - max_burst
                due = max_burst
            for _ in range(due):
                now = time.time_ns()
                for symbol in self.models:
                    trades = self.step(symbol, now)
                    sink.on_market(symbol, trades, True, now)
                done += 1
            await sink.drain()


def generate_book_messages(
    seed: int, n: int, symbol: str = "XRP/USD", depth: int = 10, *, rate: float = 20.0
) -> list[bytes]:
    """Exactly what a ``book`` subscriber at ``depth`` would receive from the synthetic market:
    a snapshot then ``n - 1`` updates, every checksum right. Deterministic for a seed
    (timestamps start at 2026-01-01T00:00:00Z and advance by ``1 / rate`` per step)."""
    market = SyntheticMarket(seed, (symbol,), rate=rate, start_ns=_BENCH_EPOCH_NS, history_hours=0)
    inst, book = market.instruments[symbol], market.books[symbol]
    pp, qp = inst.price_precision, inst.qty_precision
    view = DepthView(book, depth)
    ts = _BENCH_EPOCH_NS
    bids, asks = view.snapshot()
    out = [wire.book("snapshot", symbol, bids, asks, book.checksum(), ts, pp, qp).encode()]
    step_ns = int(1e9 / rate)
    model = market.models[symbol]
    while len(out) < n:
        ts += step_ns
        model.step(ts)
        diff = view.update()
        if diff is not None:
            out.append(
                wire.book("update", symbol, diff[0], diff[1], book.checksum(), ts, pp, qp).encode()
            )
    return out
