"""A simulator market driven by hand, for tests that must know every fill to the last unit:
the test sets the book and prints trades, then tells the exchange."""

from __future__ import annotations

import asyncio
import time

from gal_friday.sim.depth import FullBook
from gal_friday.sim.instruments import INSTRUMENTS
from gal_friday.sim.server import SimExchange
from gal_friday.sim.source import MarketSink, MarketSource
from gal_friday.sim.tape import Tape


class HandMarket(MarketSource):
    """A market that changes only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        for symbol in ("XRP/USD", "DOGE/USD"):
            inst = INSTRUMENTS[symbol]
            self.instruments[symbol] = inst
            self.books[symbol] = FullBook(symbol, inst.price_precision, inst.qty_precision)
            self.tapes[symbol] = Tape(1000, inst.price_precision, inst.qty_precision)
        self.set_book(
            "XRP/USD",
            [("2.19000", "1000"), ("2.18900", "1000")],
            [("2.20000", "1000"), ("2.20100", "1000")],
        )
        self.set_book("DOGE/USD", [("0.1790000", "90000")], [("0.1800000", "90000")])

    async def run(self, sink: MarketSink) -> None:
        await asyncio.Event().wait()

    def set_book(
        self, symbol: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
    ) -> None:
        inst, book = self.instruments[symbol], self.books[symbol]
        book.clear()
        for is_bid, levels in ((True, bids), (False, asks)):
            for price, qty in levels:
                book.set(is_bid, inst.price_scaled(price), inst.qty_scaled(qty), 0)


def move_book(
    sim: SimExchange, symbol: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
) -> None:
    market = sim.market
    assert isinstance(market, HandMarket)
    market.set_book(symbol, bids, asks)
    sim.on_market(symbol, [], True, time.time_ns())


def print_trade(sim: SimExchange, symbol: str, price: str, qty: str, side: str) -> None:
    inst = INSTRUMENTS[symbol]
    trade = sim.market.tapes[symbol].add(
        time.time_ns(), inst.price_scaled(price), inst.qty_scaled(qty), side, "market"
    )
    sim.on_market(symbol, [trade], False, time.time_ns())
