"""Tick-to-trade latency: a closing candle entering the bus to the order request leaving the
ExecutionHandler, through the real FeatureEngine, PredictionService (LightGBM in the process
pool), StrategyArbitrator, RiskManager (with its synchronous portfolio read) and
ExecutionHandler.

The venue at the end records the moment ``submit`` is called and refuses the order, so the
strategy is free to enter again on the next candle and every candle can become an order. The
model is trained on an up-trending synthetic series so that its predictions clear the entry
threshold; candles whose prediction does not are counted and left out of the figures. The
requirement's ceilings are 100 ms at most and 50 ms on average [NFR-501/502].

Run: .venv/bin/python benchmarks/tick_to_trade.py [--events 12000] [--rate 400] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prediction import pct, synthetic_candles

from gal_friday.bus import EventBus
from gal_friday.candles import CandleSeries
from gal_friday.config import ExecutionSettings, Settings, StrategySettings
from gal_friday.domain import InstrumentSpec
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    InstrumentEvent,
    PredictionEvent,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.venue import NullVenue, OrderRejected, OrderRequest
from gal_friday.features import FeatureEngine
from gal_friday.portfolio import PortfolioManager
from gal_friday.prediction.pipeline import train_from_candles
from gal_friday.prediction.service import PredictionService, load_models
from gal_friday.prediction.training import TrainSpec
from gal_friday.risk import RiskManager
from gal_friday.strategy import StrategyArbitrator

PAIR = "XRP/USD"
NS = 1_000_000_000


class StopwatchVenue(NullVenue):
    """Records when each order request leaves the handler, then refuses it."""

    name = "stopwatch"

    def __init__(self) -> None:
        self.sent_ns: dict[str, int] = {}  # signal id -> perf_counter_ns at submit

    async def submit(self, order: OrderRequest) -> str:
        self.sent_ns[order.signal_id or ""] = time.perf_counter_ns()
        raise OrderRejected("benchmark venue takes no orders")


def uptrend(n: int) -> CandleSeries:
    c = synthetic_candles(n, 11)
    drift = np.exp(np.arange(n) * 0.0004)
    return CandleSeries(
        c.time_s, c.open * drift, c.high * drift, c.low * drift, c.close * drift, c.volume, c.trades
    )


def candle_event(c: CandleSeries, i: int) -> CandleEvent:
    d = lambda x: Decimal(f"{x:.5f}")  # noqa: E731
    open_ns = int(c.time_s[i]) * NS
    return CandleEvent(
        PAIR,
        60,
        open_ns,
        d(c.open[i]),
        d(c.high[i]),
        d(c.low[i]),
        d(c.close[i]),
        Decimal(f"{c.volume[i]:.8f}"),
        d(c.close[i]),
        int(c.trades[i]),
        True,
        open_ns + 60 * NS,
    )


def book_event(close: float, ts_ns: int) -> BookEvent:
    bid = round(close * 1e5)
    return BookEvent(PAIR, ((bid, 10**12),), ((bid + 1, 10**12),), 5, 8, 0, 1, False, "", ts_ns)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12_000, help="closing candles to send")
    parser.add_argument("--rate", type=float, default=400.0, help="candles per second")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    settings = Settings()
    history = uptrend(20_000)
    live = uptrend(20_000 + args.events + 1)
    with tempfile.TemporaryDirectory() as tmp:
        spec = TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=200, folds=2)
        train_from_candles(
            settings, history, Path(tmp) / "m", spec=spec, model_id="bench", progress=False
        )
        bus = EventBus()
        features = FeatureEngine(settings.features, bus)
        features.attach()
        features.prime(PAIR, history)
        service = PredictionService(
            bus, load_models([Path(tmp) / "m"], None, features.names), workers=args.workers
        )
        portfolio = PortfolioManager(Decimal(1_000_000), pairs=[PAIR])
        portfolio.attach(bus)
        RiskManager(
            settings.risk, bus, portfolio.snapshot, taker_fee_pct=settings.fees.taker_pct
        ).attach()
        StrategyArbitrator(
            StrategySettings(confirm_momentum=False, buy_threshold=0.55), settings.fees, bus
        ).attach()
        venue = StopwatchVenue()
        handler = ExecutionHandler(ExecutionSettings(reconcile_interval_s=0), venue, bus)
        handler.attach()
        candle_of: dict[int, int] = {}  # prediction ts -> the candle's open time

        def on_prediction(event: PredictionEvent) -> None:
            candle_of[event.ts_ns] = event.features_ts_ns

        bus.subscribe(PredictionEvent, on_prediction, name="probe")
        bus.start()
        await service.start()
        await bus.publish(
            InstrumentEvent(
                PAIR,
                InstrumentSpec(
                    PAIR,
                    5,
                    8,
                    Decimal("0.00001"),
                    Decimal("0.00000001"),
                    Decimal("0.00000001"),
                    Decimal(0),
                ),
            )
        )
        published_ns: dict[int, int] = {}
        start = time.perf_counter()
        for k in range(args.events):
            i = 20_000 + k
            candle = candle_event(live, i)
            await bus.publish(book_event(float(live.close[i]), candle.received_ts_ns))
            published_ns[candle.open_ts_ns] = time.perf_counter_ns()
            await bus.publish(candle)
            await asyncio.sleep(max(0.0, start + (k + 1) / args.rate - time.perf_counter()))
        await asyncio.sleep(0.5)
        await bus.drain()
        await service.stop()
        await bus.stop()
    latencies = []
    for signal_id, sent in venue.sent_ns.items():
        candle_ts = candle_of[int(signal_id.split("-")[2])]
        latencies.append((sent - published_ns[candle_ts]) / 1e6)
    elapsed = time.perf_counter() - start
    print(
        f"{args.events} closing candles at {args.rate:.0f}/s in {elapsed:.1f} s, "
        f"{args.workers} worker(s), LightGBM 200 trees; {len(candle_of)} predictions, "
        f"{len(latencies)} became order requests"
    )
    if latencies:
        print(
            f"  tick-to-trade ms: mean {statistics.fmean(latencies):.3f}  "
            f"p50 {pct(latencies, 0.5):.3f}  p99 {pct(latencies, 0.99):.3f}  "
            f"max {max(latencies):.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
