"""A recording of the simulator's market made on a simulated clock, in no time.

``gal-friday record --exchange sim`` records the simulator over real sockets in real time, so
a recording long enough to close a few dozen 1-minute candles takes as many minutes. This
writes the same file (``kraken.recorder`` format: what a depth-``depth`` subscriber to the
``instrument``, ``book``, ``trade`` and ``ohlc`` channels receives, as the exchange server sends
it: ``sim.wire`` frames, checksummed books) by stepping the synthetic market
(``sim.market.SyntheticMarket``) ``rate`` times per simulated second, so tests and demos of
``gal-friday backtest --recording`` get hours of L2 market in seconds. Deterministic for a
seed: the same arguments give the same frames.

``corrupt`` names book updates (``(symbol, n)``: the pair's ``n``-th update, from 0) sent with
a wrong checksum, as the simulator's corrupt-checksum fault does; the stream then carries a
fresh snapshot ``resnapshot_s`` later, as a client's resubscription would receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from gal_friday.kraken.recorder import Recorder
from gal_friday.sim import wire
from gal_friday.sim.depth import DepthView
from gal_friday.sim.instruments import ASSETS
from gal_friday.sim.market import SyntheticMarket

NS = 1_000_000_000
EPOCH_NS = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
RECEIVE_DELAY_NS = 1_000_000  # 1 ms from the exchange's stamp to our receive time


def write_sim_recording(
    path: Path,
    *,
    pairs: Sequence[str] = ("XRP/USD", "DOGE/USD"),
    seed: int = 7,
    minutes: float = 30.0,
    rate: float = 5.0,
    depth: int = 10,
    start_ns: int = EPOCH_NS,
    history_hours: float = 12.0,
    ohlc_snapshot: int = 720,
    corrupt: Iterable[tuple[str, int]] = (),
    resnapshot_s: float = 2.0,
) -> int:
    """Write the recording; returns the number of frames."""
    market = SyntheticMarket(seed, pairs, rate=rate, start_ns=start_ns, history_hours=history_hours)
    views = {s: DepthView(market.books[s], depth) for s in pairs}
    bad = set(corrupt)
    updates = dict.fromkeys(pairs, 0)
    resnap: dict[str, int] = {}
    recorder = Recorder(
        path,
        source=f"sim-synthetic:seed={seed}:rate={rate:g}",
        pairs=tuple(pairs),
        depth=depth,
        flush_every_s=3600.0,
    )
    try:
        t = start_ns
        used = {a for s in pairs for a in (market.instruments[s].base, market.instruments[s].quote)}
        recorder.write(
            t + RECEIVE_DELAY_NS,
            wire.instrument_snapshot(
                [market.instruments[s] for s in pairs], [a for a in ASSETS.values() if a.id in used]
            ),
        )
        for s in pairs:
            inst = market.instruments[s]
            pp, qp = inst.price_precision, inst.qty_precision
            bids, asks = views[s].snapshot()
            recorder.write(
                t + RECEIVE_DELAY_NS,
                wire.book("snapshot", s, bids, asks, market.books[s].checksum(), t, pp, qp),
            )
            candles = market.tapes[s].candles(1, t, ohlc_snapshot)
            recorder.write(
                t + RECEIVE_DELAY_NS,
                wire.ohlc("snapshot", [wire.ohlc_item(s, c, 1, pp, qp) for c in candles], t),
            )
        step_ns = round(NS / rate)
        for _ in range(round(minutes * 60 * rate)):
            t += step_ns
            for s in pairs:
                inst = market.instruments[s]
                pp, qp = inst.price_precision, inst.qty_precision
                trades = market.step(s, t)
                at = t + RECEIVE_DELAY_NS
                if trades:
                    recorder.write(
                        at,
                        wire.trades(
                            "update",
                            [
                                wire.trade_item(
                                    s,
                                    x.side,
                                    x.price,
                                    x.qty,
                                    x.ord_type,
                                    x.trade_id,
                                    x.ts_ns,
                                    pp,
                                    qp,
                                )
                                for x in trades
                            ],
                        ),
                    )
                if s in resnap and t >= resnap[s]:
                    del resnap[s]
                    bids, asks = views[s].snapshot()
                    recorder.write(
                        at,
                        wire.book("snapshot", s, bids, asks, market.books[s].checksum(), t, pp, qp),
                    )
                else:
                    diff = views[s].update()
                    if diff is not None:
                        checksum = market.books[s].checksum()
                        if (s, updates[s]) in bad:
                            checksum = (checksum + 1) & 0xFFFFFFFF
                            resnap[s] = t + round(resnapshot_s * NS)
                        updates[s] += 1
                        recorder.write(
                            at, wire.book("update", s, diff[0], diff[1], checksum, t, pp, qp)
                        )
                if trades:
                    candle = market.tapes[s].current(1, trades[-1].ts_ns)
                    recorder.write(
                        at, wire.ohlc("update", [wire.ohlc_item(s, candle, 1, pp, qp)], t)
                    )
        return recorder.frames
    finally:
        recorder.close()
