"""The interface between a market (synthetic or replayed) and the simulated exchange.

A market source owns, per pair, the instrument facts, the full order book and the trade tape.
While it runs it changes them and tells the sink after each change; the sink (the exchange
server) turns each notification into wire messages for its subscribers. Keeping sources
ignorant of subscribers and depths is what lets one server logic serve both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from gal_friday.sim.depth import FullBook
from gal_friday.sim.instruments import SimInstrument
from gal_friday.sim.tape import Tape, Trade


class MarketSink(Protocol):
    """Receives market changes; implemented by the exchange server."""

    def on_market(
        self, symbol: str, trades: Sequence[Trade], book_changed: bool, ts_ns: int
    ) -> None:
        """``symbol``'s book changed (already applied) and/or ``trades`` printed at ``ts_ns``."""

    async def drain(self) -> None:
        """Return once subscribers have room again (backpressure for fast replays)."""


class MarketSource(ABC):
    """A market the exchange can serve: instruments, books and tapes for its pairs."""

    def __init__(self) -> None:
        self.instruments: dict[str, SimInstrument] = {}
        self.books: dict[str, FullBook] = {}
        self.tapes: dict[str, Tape] = {}
        self.finished = False  # set when a replay has no more frames to feed

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.instruments)

    @abstractmethod
    async def run(self, sink: MarketSink) -> None:
        """Drive the market, notifying ``sink`` after every change, until cancelled or (for a
        replay without looping) the data runs out."""
