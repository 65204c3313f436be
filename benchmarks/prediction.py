"""Feature vector -> published prediction latency through the PredictionService.

Trains a LightGBM model (200 trees, the engine's 13 candle features) on synthetic candles,
starts the service with its process pool, publishes feature vectors at a steady rate and
reports the latency each PredictionEvent carries (receipt of the FeatureEvent to the combined
probability), plus the event-loop lag seen meanwhile. The requirement is < 100 ms on average
from data event to prediction [NFR-501].

Run: .venv/bin/python benchmarks/prediction.py [--events 1000] [--rate 200] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gal_friday.bus import EventBus
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings
from gal_friday.events import FeatureEvent, PredictionEvent
from gal_friday.features import batch_candle_features, feature_names
from gal_friday.prediction.pipeline import train_from_candles
from gal_friday.prediction.service import PredictionService, load_models
from gal_friday.prediction.training import TrainSpec


def synthetic_candles(n: int, seed: int) -> CandleSeries:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0008, n)
    close = 2.2 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([2.2], close[:-1]))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0003, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0003, n)))
    return CandleSeries(
        np.arange(n, dtype=np.int64) * 60 + 1_700_000_000,
        open_,
        high,
        low,
        close,
        rng.uniform(100, 5000, n),
        np.ones(n, dtype=np.int64),
    )


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="feature vectors per second")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    settings = Settings()
    candles = synthetic_candles(20_000, 7)
    with tempfile.TemporaryDirectory() as tmp:
        spec = TrainSpec(min_auc=0.0, min_brier_skill=None, rounds=200, folds=2)
        train_from_candles(
            settings, candles, Path(tmp) / "m", spec=spec, model_id="bench", progress=False
        )
        names = feature_names(settings.features)
        rows = batch_candle_features(candles, settings.features).values[100:]
        bus = EventBus()
        latencies: list[float] = []
        done = asyncio.Event()

        def on_prediction(event: PredictionEvent) -> None:
            latencies.append(event.latency_ns / 1e6)
            if len(latencies) == args.events:
                done.set()

        bus.subscribe(PredictionEvent, on_prediction, name="bench")
        service = PredictionService(
            bus, load_models([Path(tmp) / "m"], None, names), workers=args.workers
        )
        bus.start()
        await service.start()
        lags: list[float] = []

        async def watch() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append((time.perf_counter() - t - 0.005) * 1000)

        watcher = asyncio.create_task(watch())
        book_and_flow = (0.0,) * (len(names) - rows.shape[1])  # the model uses candles only
        start = time.perf_counter()
        for i in range(args.events):
            values = tuple(rows[i % len(rows)].tolist()) + book_and_flow
            await bus.publish(FeatureEvent("XRP/USD", i, names, values))
            await asyncio.sleep(max(0.0, start + (i + 1) / args.rate - time.perf_counter()))
        await asyncio.wait_for(done.wait(), 120)
        watcher.cancel()
        await service.stop()
        await bus.stop()
    print(
        f"{args.events} predictions at {args.rate:.0f}/s, {args.workers} worker(s), "
        "LightGBM 200 trees x 13 features:"
    )
    print(
        f"  latency ms: mean {statistics.fmean(latencies):.3f}  p50 {pct(latencies, 0.5):.3f}"
        f"  p99 {pct(latencies, 0.99):.3f}  max {max(latencies):.3f}"
    )
    print(
        f"  event-loop lag ms: p50 {pct(lags, 0.5):.3f}  p99 {pct(lags, 0.99):.3f}  "
        f"max {max(lags):.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
