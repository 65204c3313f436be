"""Cockpit under load: event-loop lag and frames per second while the app (headless, a
160x48 screen) receives 1,000 book updates per second through the bus for ~10 s.

The cockpit's display subscription CONFLATEs books, so the load costs it one update per pair
per drain; its panels repaint from a timer. A probe task sleeps 5 ms at a time and records how
late it wakes up (the event-loop lag every handler, key press and trading module would see).
Halfway through, ``h`` is pressed and the time until the HaltEvent reaches the bus is
measured. Aim: lag p99 <= 50 ms; keys answer within 100 ms.

Run: .venv/bin/python benchmarks/tui_load.py [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from gal_friday.bus import EventBus
from gal_friday.events import HaltEvent
from gal_friday.tui.app import CockpitApp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import cockpit_script as script  # the tests' scripted cockpit market

PAIRS = ("XRP/USD", "DOGE/USD")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def probe(lags: list[float], stop: asyncio.Event, interval: float = 0.005) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - start - interval)


async def flood(bus: EventBus, rate: float, seconds: float) -> int:
    """Publish ``rate`` books per second in 10 ms batches, alternating the pairs."""
    sent, start = 0, time.perf_counter()
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            await bus.publish(script.book(PAIRS[sent % 2], seq=sent + 2, ts_ns=time.time_ns()))
            sent += 1
        await asyncio.sleep(0.01)
    return sent


async def press_halt(app: CockpitApp, halted: asyncio.Event) -> float:
    start = time.perf_counter()
    await app.run_action("halt")
    await halted.wait()
    return time.perf_counter() - start


async def run(seconds: float, rate: float) -> None:
    bus = EventBus()
    halted = asyncio.Event()
    bus.subscribe(HaltEvent, lambda _: halted.set(), name="halt-sink")
    app, runner = script.scripted_app(bus=bus, clock=time.time_ns)
    async with app.run_test(size=(160, 48)) as pilot:
        await runner.played.wait()
        await pilot.pause()
        lags: list[float] = []
        stop = asyncio.Event()
        probe_task = asyncio.create_task(probe(lags, stop))
        ticks0, frames0, t0 = app.ticks, app.frames, time.perf_counter()
        flood_task = asyncio.create_task(flood(bus, rate, seconds))
        await asyncio.sleep(seconds / 2)
        key_latency = await press_halt(app, halted)
        sent = await flood_task
        elapsed = time.perf_counter() - t0
        ticks, frames = app.ticks - ticks0, app.frames - frames0
        stop.set()
        await probe_task
        stats = {s.name: s for s in bus.stats()}["tui-latest"]
    print(f"books published: {sent:,} in {elapsed:.1f} s ({sent / elapsed:,.0f}/s)")
    print(f"cockpit deliveries: {stats.delivered:,} (conflated away: {stats.conflated:,})")
    print(
        f"event-loop lag: p50 {pct(lags, 50) * 1e3:.2f} ms  p99 {pct(lags, 99) * 1e3:.2f} ms  "
        f"max {max(lags) * 1e3:.2f} ms  mean {statistics.fmean(lags) * 1e3:.2f} ms "
        f"({len(lags):,} samples)"
    )
    print(
        f"repaint ticks: {ticks / elapsed:.1f}/s; frames (ticks that repainted): "
        f"{frames / elapsed:.1f}/s"
    )
    print(f"key 'h' to HaltEvent on the bus: {key_latency * 1e3:.1f} ms")
    verdict = "OK" if pct(lags, 99) <= 0.050 and key_latency <= 0.100 else "OVER"
    print(f"aim lag p99 <= 50 ms, key <= 100 ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="book updates per second")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rate))


if __name__ == "__main__":
    main()
