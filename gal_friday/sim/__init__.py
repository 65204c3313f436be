"""Kraken-protocol simulator: public WebSocket v2 and REST on loopback, fed by a seeded
synthetic market or a replayed recording, with switchable misbehaviour for tests.

The server and its entry points live in ``gal_friday.sim.server``; the market model in
``gal_friday.sim.market``; the instrument table in ``gal_friday.sim.instruments``.
"""

from __future__ import annotations

from gal_friday.sim.instruments import INSTRUMENTS, SimInstrument, get_instrument
from gal_friday.sim.market import SyntheticMarket, generate_book_messages
from gal_friday.sim.replay import ReplayMarket
from gal_friday.sim.server import (
    SimExchange,
    SimStats,
    build_market,
    open_sim_exchange,
    run_sim_exchange,
)
from gal_friday.sim.source import MarketSink, MarketSource

__all__ = [
    "INSTRUMENTS",
    "MarketSink",
    "MarketSource",
    "ReplayMarket",
    "SimExchange",
    "SimInstrument",
    "SimStats",
    "SyntheticMarket",
    "build_market",
    "generate_book_messages",
    "get_instrument",
    "open_sim_exchange",
    "run_sim_exchange",
]
