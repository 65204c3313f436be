"""Event-driven backtest on recorded L2 market data (``gal-friday backtest --recording``).

A recording (``gal-friday record``, ``kraken.recorder``) holds the raw Kraken WebSocket v2
frames as received, with their receive times. This replays them through the code that trades
live, on a simulated clock that is the recorded receive time of the frame being handled:

* every frame goes through ``PublicStreamDecoder`` (one per file, as one per connection): books
  are rebuilt and their checksums verified, and a failed checksum (or crossed book) discards
  the book with ``BookInvalidatedEvent`` until the next snapshot, exactly as live: the risk
  manager then has no market price (every signal is rejected), the feature engine's book
  features are NaN, and no book reaches the paper venue or the strategy until a snapshot;
* the ``FeatureEngine``'s live incremental path gets every verified book, trade and candle
  (``state(pair).on_book`` / ``on_trade`` / ``on_book_invalidated``, ``on_candle``), so feature
  vectors (book and trade-flow features included) are those the bot computed live; a closed
  candle received too late (the ohlc snapshot's history) warms indicators only;
* the configured models predict each complete vector as the live inference worker does (one
  booster per model, loaded once; ``Calibration.apply``; ``service.combine``); ``--strategy
  sma`` instead turns the recorded closed 1-minute candles into the SMA crossover's 1.0 / 0.0
  "predictions" (``SmaCross``, equal to ``signals.sma_cross_signals``);
* ``StrategyArbitrator`` (or ``MarketStrategy`` for sma), ``RiskManager``, ``ExecutionHandler``
  and ``PortfolioManager`` on a ``DirectBus``, with the paper venue's ``MatchingEngine``
  matching against the recorded books and trades: takers take the recorded book (its real
  spread; ``backtest.half_spread_bps`` does not apply), resting limits fill only from the
  recorded trades (through the limit, or at it after ``backtest.queue_share``), depth walks,
  maker/taker fees, slippage and latency from ``[paper]``. Stops trigger on a trade or the
  book's touch, as paper trading's. The recorded trades come in their order, so no candle is
  ambiguous (``backtest.intrabar`` does not apply). The handler's timer (entry timeouts)
  runs on the simulated clock.

Several recordings are merged by receive time (ties: in the order given); when one ends, its
books are invalidated as on a disconnect. Instruments come from the recording's
``instrument`` channel. The equity curve is the portfolio's equity (books marked at their mid)
after every closed candle. Nothing depends on the wall clock, so the same recording gives the
same report.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from gal_friday.backtest.engine import (
    Fill,
    Halt,
    record_fill,
    record_halts,
    record_rejections,
    settle,
    wire_trading,
)
from gal_friday.backtest.runner import BacktestResult, backtest_result
from gal_friday.backtest.signals import sma
from gal_friday.backtest.venue import DirectBus
from gal_friday.config import Settings
from gal_friday.domain import InstrumentSpec
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    InstrumentEvent,
    PredictionEvent,
    TradeEvent,
    TradeSignalApprovedEvent,
)
from gal_friday.features import FeatureEngine
from gal_friday.kraken.public import PublicStreamDecoder
from gal_friday.kraken.recorder import RecordingError, RecordingFrames, read_recording
from gal_friday.prediction.model import load_booster
from gal_friday.prediction.service import Combine, LoadedModel, combine
from gal_friday.wiring import StrategyFactory, default_strategy

NS = 1_000_000_000


# --- predictions -------------------------------------------------------------------------------


class ModelPredictor:
    """The configured models on one feature vector, as the live inference worker and
    ``PredictionService`` compute it: the model's columns, nothing published for a row with a
    NaN, ``Booster.predict`` on one row, ``Calibration.apply``, then ``combine``."""

    def __init__(self, models: Sequence[LoadedModel], how: Combine) -> None:
        self.models = list(models)
        self.how = how
        self.model_id = "+".join(m.meta.model_id for m in models)
        self.boosters = [load_booster(m.directory) for m in models]
        self.skipped_incomplete = 0

    def __call__(
        self, pair: str, now_ns: int, candle: CandleEvent, features: FeatureEvent | None
    ) -> float | None:
        if features is None:
            return None
        probs = []
        for model, booster in zip(self.models, self.boosters, strict=True):
            row = [features.values[i] for i in model.positions]
            if any(math.isnan(v) for v in row):
                self.skipped_incomplete += 1
                return None
            raw = float(booster.predict(np.asarray([row], dtype=np.float64), num_threads=1)[0])
            probs.append(model.meta.calibration.apply(raw))
        return combine(probs, [m.weight for m in self.models], self.how)


class SmaCross:
    """``signals.sma_cross_signals`` one candle at a time: 1.0 at an upward cross of the fast
    SMA over the slow one, 0.0 at a downward cross, else nothing. Each average is computed
    by ``signals.sma`` over the same window (so bit-equal to the batch), and the last
    non-zero difference is carried as ``signals.crossover`` does."""

    def __init__(self, fast: int, slow: int) -> None:
        self.fast, self.slow = fast, slow
        self.closes: deque[float] = deque(maxlen=max(fast, slow))
        self.carry = math.nan
        self.seeded = False

    def push(self, close: float) -> float:
        self.closes.append(close)
        window = np.asarray(self.closes, dtype=np.float64)
        f = float(sma(window, self.fast)[-1])
        s = float(sma(window, self.slow)[-1])
        diff = f - s
        prev = self.carry
        if diff == diff:  # not NaN
            if not self.seeded:
                self.carry, self.seeded = diff, True
            elif diff != 0.0:
                self.carry = diff
        if prev < 0.0 and f > s:
            return 1.0
        if prev > 0.0 and f < s:
            return 0.0
        return math.nan


class SmaPredictor:
    """The SMA crossover per pair over the recorded closed candles (every new closed candle,
    history included, so the averages warm up from the ohlc snapshot); a decision only for a
    candle the feature engine would publish (fresh, not a repeat)."""

    def __init__(self, fast: int, slow: int) -> None:
        self.fast, self.slow = fast, slow
        self.model_id = f"sma-{fast}-{slow}"
        self.pairs: dict[str, SmaCross] = {}
        self.last_open: dict[str, int] = {}

    def on_closed(self, candle: CandleEvent) -> float | None:
        """Feed one closed candle; the signal (NaN: none) or None when not a new candle."""
        last = self.last_open.get(candle.pair)
        if last is not None and candle.open_ts_ns <= last:
            return None
        self.last_open[candle.pair] = candle.open_ts_ns
        cross = self.pairs.setdefault(candle.pair, SmaCross(self.fast, self.slow))
        return cross.push(float(candle.close))


# --- frames ------------------------------------------------------------------------------------


@dataclass
class Recording:
    """One file: its header and its frames ``(receive_ns, raw)``."""

    path: Path
    header: dict[str, Any]
    frames: RecordingFrames


def open_recordings(paths: Sequence[Path]) -> list[Recording]:
    out = []
    for path in paths:
        if not path.is_file():
            raise RecordingError(f"{path}: no such recording")
        header, frames = read_recording(path)
        out.append(Recording(path, header, frames))
    return out


def merged_frames(recordings: Sequence[Recording]) -> Iterator[tuple[int, int, str | None]]:
    """``(receive_ns, file index, raw)`` of every file by receive time (ties in file order);
    each file ends with ``(its last time, index, None)``."""

    def tagged(k: int, rec: Recording) -> Iterator[tuple[int, int, int, str | None]]:
        last, n = 0, 0
        for t, raw in rec.frames:
            last = max(last, t)
            n += 1
            yield t, k, n, raw
        if n:  # a file with no frames (stopped before any data) ends nothing
            yield last, k, n + 1, None

    for t, k, _, raw in heapq.merge(*(tagged(k, r) for k, r in enumerate(recordings))):
        yield t, k, raw


# --- the run -----------------------------------------------------------------------------------


@dataclass
class RecordingRun:
    """What a recording run produced, before metrics."""

    fills: list[Fill]
    times_ns: list[int]
    equity: list[float]
    final_equity: Decimal
    fees_paid: Decimal
    held: dict[str, Decimal]
    stats: dict[str, int] = field(default_factory=dict)
    model_id: str = ""
    approvals: list[tuple[int, str, str, bool]] = field(default_factory=list)
    halts: list[Halt] = field(default_factory=list)


class RecordingBacktest:
    """Replays recordings through decoder, features, predictions and the trading modules."""

    def __init__(
        self,
        settings: Settings,
        paths: Sequence[Path],
        *,
        capital: Decimal,
        predictor: ModelPredictor | SmaPredictor,
        strategy: StrategyFactory = default_strategy,
    ) -> None:
        execution = settings.execution.model_copy(update={"reconcile_interval_s": 0.0})
        paper = settings.paper.model_copy(update={"initial_cash_usd": capital})
        self.settings = s = settings.model_copy(update={"execution": execution, "paper": paper})
        self.recordings = open_recordings(paths)
        pairs: list[str] = []
        for rec in self.recordings:
            for pair in rec.header.get("pairs") or settings.pairs:
                if pair not in pairs:
                    pairs.append(str(pair))
        self.pairs = tuple(pairs)
        self.capital = capital
        self.predictor = predictor
        self.now = 0
        self.bus = DirectBus()
        interval = s.kraken.ohlc_interval_min
        self.decoders = [
            PublicStreamDecoder(
                tuple(r.header.get("pairs") or settings.pairs),
                int(r.header.get("depth") or s.kraken.book_depth),
                interval_min=interval,
                clock=self._clock,
                monotonic=self._mono,
            )
            for r in self.recordings
        ]
        self.features = FeatureEngine(s.features, self.bus)
        self._frames = merged_frames(self.recordings)
        head = next(self._frames, None)
        if head is None or head[2] is None:
            raise RecordingError("the recordings hold no frames")
        self._head = head
        self.now = head[0]
        self.venue, modules = wire_trading(
            s, self.bus, self._clock, capital, self.pairs, self.now, strategy
        )
        self.handler, self.portfolio = modules.execution, modules.portfolio
        self.risk, self.strategy = modules.risk, modules.strategy
        self.bus.subscribe(ExecutionReportEvent, self._on_report, name="backtest-recorder")
        self.trading = record_halts(self.bus)
        self.rejections = record_rejections(self.bus)
        self.bus.subscribe(TradeSignalApprovedEvent, self._on_approved, name="backtest-approvals")
        self.instruments: dict[str, InstrumentSpec] = {}
        self.valid: dict[str, bool] = {}
        self.fills: list[Fill] = []
        self.held: dict[str, Decimal] = {}
        self.times: list[int] = []
        self.equity: list[float] = []
        self.stats = {
            "frames": 0,
            "books": 0,
            "trades_seen": 0,
            "candles": 0,
            "checksum_failures": 0,
            "book_invalidations": 0,
            "malformed": 0,
            "features": 0,
            "decisions": 0,
            "predictions_on_invalid_book": 0,
            "approved_on_invalid_book": 0,
        }
        self.approvals: list[tuple[int, str, str, bool]] = []
        self._tick_ns = int(self.handler.tick_s * NS)
        self._next_tick = 0
        self._forget_at = 64

    def _clock(self) -> int:
        return self.now

    def _mono(self) -> float:
        return self.now / NS

    async def run(self) -> RecordingRun:
        await self.venue.start(self.handler.on_venue_report)
        self.times.append(self.now)  # the curve starts at the first frame
        self.equity.append(float(self.capital))
        self._next_tick = self.now + self._tick_ns
        for t, k, raw in itertools.chain([self._head], self._frames):
            self.now = max(self.now, t)
            if self.now >= self._next_tick:  # the handler's timer, on the simulated clock
                self._next_tick = self.now + self._tick_ns
                await self.handler.tick(self.now)
                await self._settle()
            decoder = self.decoders[k]
            if raw is None:
                events = decoder.reset_connection("recording ended")
            else:
                self.stats["frames"] += 1
                events = decoder.feed(raw)
                await self._instruments(decoder)
            for event in events:
                await self._market(event)
            await self._settle()
        await self._finish()
        snap = self.portfolio.snapshot()
        for d in self.decoders:
            self.stats["checksum_failures"] += d.stats.checksum_failures
            self.stats["malformed"] += d.stats.malformed
        self.stats.update(
            orders=self.venue.submitted,
            signals_approved=self.risk.approved,
            signals_rejected=self.risk.rejected,
            events=self.bus.published,
            unreadable_lines=sum(r.frames.skipped for r in self.recordings),
            truncated_files=sum(r.frames.truncated for r in self.recordings),
            **dict(sorted(self.rejections.items())),
        )
        self._sample()
        return RecordingRun(
            self.fills,
            self.times,
            self.equity,
            snap.equity,
            snap.fees_paid,
            {k: v for k, v in self.held.items() if v},
            dict(self.stats),
            self.predictor.model_id,
            self.approvals,
            self.trading.halts,
        )

    async def _instruments(self, decoder: PublicStreamDecoder) -> None:
        """Publish each pair's rules from the instrument channel when new or changed (live,
        they come from REST AssetPairs: the same facts)."""
        for pair, spec in decoder.instruments.items():
            if self.instruments.get(pair) != spec:
                self.instruments[pair] = spec
                await self.bus.publish(InstrumentEvent(pair, spec))

    async def _market(self, event: Event) -> None:
        """One decoded event: features first (their state), then the bus; a closed candle
        then publishes its feature vector and prediction."""
        if type(event) is BookEvent:
            self.stats["books"] += 1
            self.valid[event.pair] = True
            self.features.state(event.pair).on_book(event)
            await self.bus.publish(event)
        elif type(event) is TradeEvent:
            self.stats["trades_seen"] += 1
            self.features.state(event.pair).on_trade(event)
            await self.bus.publish(event)
        elif type(event) is BookInvalidatedEvent:
            self.stats["book_invalidations"] += 1
            self.valid[event.pair] = False
            self.features.state(event.pair).on_book_invalidated()
            await self.bus.publish(BookInvalidatedEvent(event.pair, event.reason, ts_ns=self.now))
        elif type(event) is CandleEvent and event.closed:
            await self._closed_candle(event)

    async def _closed_candle(self, candle: CandleEvent) -> None:
        features = self.features.on_candle(candle)
        if features is not None:
            self.stats["features"] += 1
            await self.bus.publish(features)
        if isinstance(self.predictor, SmaPredictor):
            prob = self.predictor.on_closed(candle)
            if prob is not None:
                self.stats["candles"] += 1
            fresh = candle.received_ts_ns - candle.open_ts_ns - candle.interval_s * NS
            max_age = int(self.settings.features.max_candle_age_s * NS)
            if prob is None or prob != prob or (max_age and fresh > max_age):
                prob = None
        else:
            if features is not None:
                self.stats["candles"] += 1
            prob = self.predictor(candle.pair, self.now, candle, features)
        if prob is not None:
            self.stats["decisions"] += 1
            if not self.valid.get(candle.pair, False):
                self.stats["predictions_on_invalid_book"] += 1
            await self.bus.publish(
                PredictionEvent(
                    candle.pair, self.now, self.predictor.model_id, prob, candle.open_ts_ns, 0
                )
            )
            await self._settle()
        self._sample()

    def _sample(self) -> None:
        """The portfolio's equity now (one point per time: the latest wins)."""
        equity = float(self.portfolio.snapshot().equity)
        if self.times and self.times[-1] == self.now:
            self.equity[-1] = equity
        else:
            self.times.append(self.now)
            self.equity.append(equity)

    async def _on_approved(self, signal: TradeSignalApprovedEvent) -> None:
        """Note each approved signal and whether its pair's book was valid then."""
        valid = self.valid.get(signal.pair, False)
        self.approvals.append((self.now, signal.pair, signal.signal_id, valid))
        if not valid:
            self.stats["approved_on_invalid_book"] += 1

    async def _settle(self) -> None:
        self._forget_at = await settle(self.handler, self.venue, self._forget_at)

    async def _on_report(self, r: ExecutionReportEvent) -> None:
        record_fill(self.fills, self.held, r, self.venue)

    async def _finish(self) -> None:
        await self._settle()
        tasks = list(self.handler._tasks)  # what is left when the data ends
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_recording_backtest(
    settings: Settings,
    paths: Sequence[Path],
    *,
    capital: Decimal,
    predictor: ModelPredictor | SmaPredictor,
    strategy: StrategyFactory = default_strategy,
) -> BacktestResult:
    """Run recordings end to end and compute the report's figures (``BacktestResult``)."""
    started = time.perf_counter()
    bt = RecordingBacktest(settings, paths, capital=capital, predictor=predictor, strategy=strategy)
    out = await bt.run()
    loop_s = time.perf_counter() - started
    if not out.times_ns:
        raise RecordingError("the recordings hold no frames")
    times = np.asarray(out.times_ns, dtype=np.int64)
    equity = np.asarray(out.equity, dtype=np.float64)
    return backtest_result(settings, bt.pairs, times, equity, out, capital=capital, loop_s=loop_s)
