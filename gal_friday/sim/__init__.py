"""Kraken-protocol simulator: public WebSocket v2 and REST on loopback, fed by a seeded
synthetic market or a replayed recording, with switchable misbehaviour for tests.

The server and its entry points live in ``gal_friday.sim.server`` (its public WebSocket
protocol in ``sim.protocol``, the fan-out to subscribers in ``sim.fanout``, the fault endpoint
in ``sim.faults``); the market model in ``gal_friday.sim.market``; the instrument table in
``gal_friday.sim.instruments``. The matching engine it trades with is
``gal_friday.execution.matching``.
"""

from __future__ import annotations

from gal_friday.sim.instruments import INSTRUMENTS, SimInstrument, get_instrument
from gal_friday.sim.market import SyntheticMarket, generate_book_messages
from gal_friday.sim.replay import ReplayMarket
from gal_friday.sim.server import (
    SimExchange,
    build_market,
    open_sim_exchange,
    run_sim_exchange,
)
from gal_friday.sim.source import MarketSink, MarketSource
from gal_friday.sim.stats import SimStats

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
