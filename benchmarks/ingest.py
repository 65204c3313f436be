"""Book ingestion throughput: Gal-Friday against python-kraken-sdk on the same messages.

Measures messages per second for parse + apply + checksum verification over a stream of at
least 100k Kraken WebSocket v2 book messages (a snapshot then updates), single core:

* gal-friday core:      msgspec decode (numbers as exact text) + book apply + CRC32 verify
* gal-friday decoder:   the full ``PublicStreamDecoder.feed`` path the live client runs, which
                        also publishes an immutable BookEvent per message
* gal-friday (pure Py): the decoder with the pure-Python book (no C extension)
* python-kraken-sdk:    ``json.loads`` + ``SpotOrderBookClient.on_message`` (its own checksum)

Messages come from the simulator's synthetic market (default), a recording made by
``gal-friday record`` (``--recording FILE``), or Kraken's real BTC/USD capture from
../shared/data when present (``--kraken-capture``, repeated to reach the count).

Run: .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/ingest.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from gal_friday.kraken.book import ACCELERATED, OrderBook
from gal_friday.kraken.public import PublicStreamDecoder

CAPTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "kraken_ws_v2_python_kraken_sdk"
    / "orderbook-v2.json"
)


def instrument_frame(symbol: str, pp: int, qp: int) -> bytes:
    pair = {"symbol": symbol, "price_precision": pp, "qty_precision": qp, "status": "online"}
    return json.dumps(
        {"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": [pair]}}
    ).encode()


def sim_messages(n: int, seed: int, depth: int) -> tuple[str, int, int, list[bytes]]:
    from gal_friday.sim.instruments import get_instrument
    from gal_friday.sim.market import generate_book_messages

    symbol = "XRP/USD"
    inst = get_instrument(symbol)
    msgs = generate_book_messages(seed, n, symbol=symbol, depth=depth)
    return symbol, inst.price_precision, inst.qty_precision, [bytes(m) for m in msgs]


def capture_messages(n: int) -> tuple[str, int, int, list[bytes]]:
    data = json.loads(CAPTURE.read_text())
    stream = [json.dumps(data["init"]).encode()]
    updates = [json.dumps(m).encode() for m in data["updates"]]
    while len(stream) < n:  # replay: snapshot again, then the updates
        stream.append(stream[0])
        stream.extend(updates)
    return "BTC/USD", 1, 8, stream[:n]


def recording_messages(path: Path, n: int) -> tuple[str, int, int, list[bytes]]:
    from gal_friday.kraken.recorder import read_recording

    _, frames = read_recording(path)
    raws = [raw for _, raw in frames]
    instrument = next(r for r in raws if r.startswith('{"channel":"instrument"'))
    books = [r.encode() for r in raws if r.startswith('{"channel":"book"')]
    first = msgspec.json.decode(books[0])["data"][0]["symbol"]
    books = [b for b in books if f'"symbol":"{first}"'.encode() in b]
    pairs = msgspec.json.decode(instrument)["data"]["pairs"]
    spec = next(p for p in pairs if p["symbol"] == first)
    return first, spec["price_precision"], spec["qty_precision"], books[:n]


def bench(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Best-of-``repeat`` messages per second; returns (rate, messages per run)."""
    rates = []
    count = 0
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return max(rates), count


def run_core(symbol: str, pp: int, qp: int, msgs: list[bytes], depth: int) -> int:
    decode = msgspec.json.Decoder(float_hook=str).decode
    book = OrderBook(symbol, depth, pp, qp)
    bad = 0
    for raw in msgs:
        msg = decode(raw)
        item = msg["data"][0]
        if msg["type"] == "snapshot":
            book.apply_snapshot(item["bids"], item["asks"])
        else:
            book.apply_update(item["bids"], item["asks"])
        if book.checksum() != item["checksum"]:
            bad += 1
    if bad:
        raise SystemExit(f"gal-friday core: {bad} checksum failures")
    return len(msgs)


def run_decoder(symbol: str, pp: int, qp: int, msgs: list[bytes], depth: int) -> int:
    dec = PublicStreamDecoder([symbol], depth)
    dec.feed(instrument_frame(symbol, pp, qp))
    feed = dec.feed
    for raw in msgs:
        feed(raw)
    if dec.stats.checksum_failures or dec.stats.malformed:
        raise SystemExit(f"gal-friday decoder: {dec.stats}")
    return len(msgs)


def run_sdk(symbol: str, pp: int, qp: int, texts: list[str], depth: int) -> int:
    import kraken.spot.orderbook as sdk_orderbook
    from kraken.spot import SpotOrderBookClient

    async def no_pause(*_: object) -> None:  # the SDK sleeps 3 s before re-subscribing
        return None

    sdk_orderbook.asyncio_sleep = no_pause

    class Market:  # stands in for the REST AssetPairs call the client makes on first sight
        def get_asset_pairs(self, pair: str) -> dict[str, Any]:
            return {pair: {"pair_decimals": pp, "lot_decimals": qp}}

    class Quiet(SpotOrderBookClient):  # type: ignore[misc]
        invalid = 0

        async def on_book_update(self, pair: str, message: dict[str, Any]) -> None:
            if "error" in message:
                Quiet.invalid += 1

        async def remove_book(self, pairs: list[str]) -> None:
            self._SpotOrderBookClient__book.pop(pairs[0], None)

        async def add_book(self, pairs: list[str]) -> None:
            return None

    async def main() -> int:
        client = Quiet(depth=depth)
        client._SpotOrderBookClient__market = Market()
        loads, on_message = json.loads, client.on_message
        book = client._SpotOrderBookClient__book
        for text in texts:
            if text.startswith('{"channel": "book", "type": "snapshot"') or text.startswith(
                '{"channel":"book","type":"snapshot"'
            ):
                book.pop(symbol, None)  # the SDK expects a fresh client per snapshot
            await on_message(loads(text))
        await client.close()
        return len(texts)

    n = asyncio.run(main())
    if Quiet.invalid:
        raise SystemExit(f"python-kraken-sdk: {Quiet.invalid} checksum failures")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--recording", type=Path, help="a file made by 'gal-friday record'")
    source.add_argument(
        "--kraken-capture",
        action="store_true",
        help="Kraken's real BTC/USD v2 capture from ../shared/data",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    t0 = time.perf_counter()
    if args.recording:
        symbol, pp, qp, msgs = recording_messages(args.recording, args.messages)
        origin = f"recording {args.recording}"
    elif args.kraken_capture:
        symbol, pp, qp, msgs = capture_messages(args.messages)
        origin = "Kraken BTC/USD capture (python-kraken-sdk fixture)"
    else:
        symbol, pp, qp, msgs = sim_messages(args.messages, args.seed, args.depth)
        origin = f"simulator, seed {args.seed}"
    texts = [m.decode() for m in msgs]
    levels = [
        len(msgspec.json.decode(m)["data"][0]["bids"])
        + len(msgspec.json.decode(m)["data"][0]["asks"])
        for m in msgs[1:2001]
    ]
    print(
        f"messages: {len(msgs):,} {symbol} depth {args.depth} from {origin} "
        f"(prepared in {time.perf_counter() - t0:.1f}s; "
        f"{statistics.mean(levels):.2f} levels/update, "
        f"{statistics.mean(len(m) for m in msgs):.0f} bytes/message)"
    )
    print(f"C book extension: {'built' if ACCELERATED else 'NOT built (pure Python)'}")

    results: list[tuple[str, float]] = []
    rate, _ = bench(lambda: run_core(symbol, pp, qp, msgs, args.depth), args.repeat)
    results.append(("gal-friday core (parse+apply+checksum)", rate))
    rate, _ = bench(lambda: run_decoder(symbol, pp, qp, msgs, args.depth), args.repeat)
    results.append(("gal-friday decoder (+ BookEvent per message)", rate))
    if ACCELERATED:
        original = OrderBook.__init__.__kwdefaults__
        OrderBook.__init__.__kwdefaults__ = {"accelerated": False}
        try:
            rate, _ = bench(lambda: run_decoder(symbol, pp, qp, msgs, args.depth), args.repeat)
        finally:
            OrderBook.__init__.__kwdefaults__ = original
        results.append(("gal-friday decoder, pure-Python book", rate))
    try:
        sdk_rate, _ = bench(lambda: run_sdk(symbol, pp, qp, texts, args.depth), 1)
    except ImportError:
        sdk_rate = 0.0
        print("python-kraken-sdk not installed: pip install -e '.[bench]'", file=sys.stderr)
    results.append(("python-kraken-sdk 3.x SpotOrderBookClient", sdk_rate))

    print(f"{'implementation':48s} {'msgs/s':>12s} {'vs SDK':>8s}")
    for name, rate in results:
        ratio = f"{rate / sdk_rate:.1f}x" if sdk_rate else "-"
        print(f"{name:48s} {rate:12,.0f} {ratio:>8s}")


if __name__ == "__main__":
    main()
