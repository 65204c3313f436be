"""The synthetic market: valid Kraken book streams, a realistic book, determinism, history."""

from __future__ import annotations

import itertools
import math
import statistics
import time

import msgspec
import pytest

from gal_friday.kraken.book import OrderBook
from gal_friday.kraken.checksum import book_checksum
from gal_friday.sim.depth import DepthView, FullBook
from gal_friday.sim.instruments import DOGE_USD, INSTRUMENTS, XRP_USD
from gal_friday.sim.market import MIN_LEVELS, SyntheticMarket, generate_book_messages
from gal_friday.sim.tape import NS_PER_MIN, Tape

_decode = msgspec.json.Decoder(float_hook=str).decode
EPOCH = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def replay_as_client(messages: list[bytes], symbol: str, depth: int) -> list[OrderBook]:
    """Apply a stream exactly as a Kraken client does; assert every checksum and no cross."""
    inst = INSTRUMENTS[symbol]
    book = OrderBook(symbol, depth, inst.price_precision, inst.qty_precision)
    states = []
    for i, raw in enumerate(messages):
        msg = _decode(raw)
        assert msg["channel"] == "book"
        assert msg["type"] == ("snapshot" if i == 0 else "update")
        item = msg["data"][0]
        if i == 0:
            book.apply_snapshot(item["bids"], item["asks"])
        else:
            assert item["bids"] or item["asks"], "an update must change something"
            book.apply_update(item["bids"], item["asks"])
        assert book.checksum() == item["checksum"], f"checksum of message {i}"
        assert not book.is_crossed(), f"crossed after message {i}"
        states.append(book)
    return states


@pytest.mark.parametrize(
    ("symbol", "depth"), [("XRP/USD", 10), ("XRP/USD", 25), ("DOGE/USD", 10), ("DOGE/USD", 25)]
)
def test_generated_stream_checksums_verify(symbol: str, depth: int) -> None:
    messages = generate_book_messages(11, 3000, symbol, depth)
    assert len(messages) == 3000
    first = _decode(messages[0])["data"][0]
    assert len(first["bids"]) == depth and len(first["asks"]) == depth
    replay_as_client(messages, symbol, depth)


def test_depth_100_snapshot_is_full_and_verifies() -> None:
    messages = generate_book_messages(3, 400, "XRP/USD", 100)
    first = _decode(messages[0])["data"][0]
    assert len(first["bids"]) == 100 and len(first["asks"]) == 100
    replay_as_client(messages, "XRP/USD", 100)


def test_amounts_are_written_at_full_precision() -> None:
    """Prices carry 5 (XRP) / 7 (DOGE) decimals and quantities 8, trailing zeros kept."""
    for symbol, pp in (("XRP/USD", 5), ("DOGE/USD", 7)):
        text = generate_book_messages(2, 2, symbol)[0].decode()
        item = _decode(text)["data"][0]
        for level in item["bids"] + item["asks"]:
            assert len(level["price"].split(".")[1]) == pp
            assert len(level["qty"].split(".")[1]) == 8
        assert ".00000000}" in text  # whole-unit sizes keep their zeros on the wire


def test_generation_is_deterministic_per_seed() -> None:
    assert generate_book_messages(5, 500) == generate_book_messages(5, 500)
    assert generate_book_messages(5, 500) != generate_book_messages(6, 500)


def test_market_steps_do_not_depend_on_the_clock() -> None:
    """Same seed and same calls give the same books and prints, whatever the timestamps."""
    a = SyntheticMarket(9, history_hours=0, start_ns=EPOCH)
    b = SyntheticMarket(9, history_hours=0, start_ns=EPOCH + 10**12)
    for i in range(2000):
        for symbol in ("XRP/USD", "DOGE/USD"):
            ta = a.step(symbol, EPOCH + i * 50_000_000)
            tb = b.step(symbol, EPOCH + 10**12 + i * 7_000_000)
            assert [(t.price, t.qty, t.side, t.ord_type) for t in ta] == [
                (t.price, t.qty, t.side, t.ord_type) for t in tb
            ]
    for symbol in ("XRP/USD", "DOGE/USD"):
        assert a.books[symbol].bids.top(50) == b.books[symbol].bids.top(50)
        assert a.books[symbol].asks.top(50) == b.books[symbol].asks.top(50)


def test_book_looks_like_a_market() -> None:
    """Deep, never crossed, spread of a few grains, varying sizes, a moving mid."""
    market = SyntheticMarket(21, ("XRP/USD",), history_hours=0, start_ns=EPOCH)
    book = market.books["XRP/USD"]
    grain = XRP_USD.profile.grain_ticks if XRP_USD.profile else 1
    spreads, mids, prints = [], [], 0
    for i in range(20_000):
        prints += len(market.step("XRP/USD", EPOCH + i * 50_000_000))
        assert len(book.bids) >= MIN_LEVELS // 2 and len(book.asks) >= MIN_LEVELS // 2
        bid, ask = book.bids.best(), book.asks.best()
        assert bid < ask
        spreads.append(ask - bid)
        mids.append((ask + bid) / 2)
    assert 1 <= statistics.median(spreads) <= 4 * grain
    assert len(book.bids) >= 100 and len(book.asks) >= 100
    sizes = {q for _, q in book.bids.top(100)}
    assert len(sizes) > 60  # sizes vary
    assert max(mids) - min(mids) > 20 * grain  # the mid wanders
    assert 300 < prints < 10_000  # market orders print, but most events are quotes
    # prices stay on the tick grid and in a realistic range
    assert all(p % XRP_USD.tick == 0 for p, _ in book.bids.top(200))
    assert 0.5e5 < mids[-1] < 2.5e5


def test_volatility_clusters() -> None:
    """Absolute one-minute returns are positively autocorrelated (calm and hot spells)."""
    market = SyntheticMarket(4, ("DOGE/USD",), history_hours=0, start_ns=EPOCH, rate=20)
    book = market.books["DOGE/USD"]
    mids = []
    for i in range(120 * 1200):  # two simulated hours at 20 steps a second
        market.models["DOGE/USD"].step(EPOCH + i * 50_000_000)
        if i % 1200 == 0:
            mids.append((book.bids.best() + book.asks.best()) / 2)
    rets = [abs(math.log(b / a)) for a, b in itertools.pairwise(mids)]
    mean = statistics.fmean(rets)
    num = sum((x - mean) * (y - mean) for x, y in itertools.pairwise(rets))
    assert num / sum((x - mean) ** 2 for x in rets) > 0.05


def test_depth_view_sends_only_what_the_client_cannot_infer() -> None:
    book = FullBook("XRP/USD", 5, 8)
    for i in range(12):
        book.set(True, 200_000 - i * 10, 100_000_000 + i, 0)
        book.set(False, 200_010 + i * 10, 200_000_000 + i, 0)
    view = DepthView(book, 10)
    # a better bid pushes the 10th bid below depth: only the new level is sent
    book.set(True, 200_005, 5, 0)
    assert view.update() == ([(200_005, 5)], [])
    # deleting a top ask: the delete first (as Kraken orders it), then the ask that now
    # enters the top 10
    book.set(False, 200_010, 0, 0)
    assert view.update() == ([], [(200_010, 0), (200_110, 200_000_010)])
    # a change below the depth is invisible
    book.set(True, 199_880, 7, 0)
    assert view.update() is None
    assert book.checksum() == book_checksum(book.asks.top(10), book.bids.top(10))


def test_history_gives_a_day_of_candles_and_pageable_trades() -> None:
    market = SyntheticMarket(8, history_hours=24, start_ns=EPOCH + 30 * 10**9)
    for inst in (XRP_USD, DOGE_USD):
        tape = market.tapes[inst.symbol]
        candles = tape.candles(1, EPOCH + 30 * 10**9, 720)
        assert len(candles) == 720
        assert candles[-1][0] == EPOCH  # the in-progress minute comes last
        assert all(b[0] - a[0] == NS_PER_MIN for a, b in itertools.pairwise(candles))
        for _begin, o, h, low, c, vol, vwap, count in candles:
            assert low <= min(o, c) <= max(o, c) <= h
            assert (count == 0) == (vol == 0)
            assert count == 0 or low <= vwap <= h
        # the history ends near the live market's opening price
        opening = market.books[inst.symbol].bids.best()
        assert abs(candles[-2][4] - opening) / opening < 0.01
        _check_pagination(tape)


def _check_pagination(tape: Tape) -> None:
    since, seen = 0, 0
    ids: list[int] = []
    while True:
        rows, last = tape.page(since, 1000)
        if not rows:
            break
        ids.extend(tape.trade_id(i) for i in rows)
        seen += len(rows)
        since = last
    assert seen == len(tape.ts) > 10_000
    assert ids == list(range(ids[0], ids[0] + seen))


def test_candles_aggregate_to_longer_intervals() -> None:
    tape = Tape(1, 5, 8)
    base = EPOCH
    for minute, price in ((0, 100), (1, 120), (2, 90), (4, 110), (5, 130)):
        tape.add(base + minute * NS_PER_MIN + 1, price, 10, "buy", "market")
    five = tape.candles(5, base + 5 * NS_PER_MIN, 10)
    assert [c[:5] for c in five] == [
        (base, 100, 120, 90, 110),
        (base + 5 * NS_PER_MIN, 130, 130, 130, 130),
    ]
    assert five[0][5] == 40 and five[0][7] == 4
    assert five[0][6] == (100 + 120 + 90 + 110) // 4


def test_generation_is_fast_enough_for_benchmarks() -> None:
    """100k messages must take well under 20 s; 20k here with a generous bound."""
    started = time.perf_counter()
    messages = generate_book_messages(1, 20_000)
    assert len(messages) == 20_000
    assert time.perf_counter() - started < 8.0


@pytest.mark.parametrize("symbol", sorted(INSTRUMENTS))
def test_instrument_spec_matches_what_the_bot_reads_from_asset_pairs(symbol: str) -> None:
    """The domain spec the backtester takes from the table is the one the bot builds from the
    simulator's REST ``AssetPairs`` answer for the same pair."""
    from gal_friday.kraken.rest import instrument_from_asset_pair
    from gal_friday.sim.rest import asset_pair_info

    inst = INSTRUMENTS[symbol]
    assert inst.spec == instrument_from_asset_pair(asset_pair_info(inst))
    assert inst.spec.pair == symbol
