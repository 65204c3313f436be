"""A bot process for the crash-recovery test: the real store, audit writer, Kraken trading
venue, execution handler, portfolio and recovery, trading XRP/USD against a separately running
simulator as fast as it can (a market entry, its stop and target, then an exit, again and
again), so that a ``kill -9`` lands somewhere in an order's life.

Usage: python crash_bot.py DATA_DIR WS_AUTH_URL REST_URL [--recover-only]
Credentials come from KRAKEN_API_KEY / KRAKEN_API_SECRET. Prints one JSON line with the
recovery result, then trades until SIGTERM (a clean stop) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

from gal_friday.bus import EventBus
from gal_friday.config import Credentials, Settings
from gal_friday.events import OrderType, Side, TradeSignalApprovedEvent
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.trading import KrakenTradingVenue
from gal_friday.portfolio import PortfolioManager
from gal_friday.recovery import recover
from gal_friday.store import make_store
from gal_friday.store.audit import AuditWriter

PAIR = "XRP/USD"


def settings(data_dir: str, ws_auth_url: str, rest_url: str) -> Settings:
    return Settings.model_validate(
        {
            "exchange": "kraken",
            "mode": "live",
            "pairs": [PAIR],
            "paths": {"data_dir": data_dir},
            "kraken": {
                "ws_private_url": ws_auth_url,
                "rest_url": rest_url,
                "request_timeout_s": 3.0,
                "reconnect_initial_s": 0.1,
                "reconnect_max_s": 0.5,
            },
            "execution": {"busy_retry_s": 0.05, "reconcile_interval_s": 0, "dead_man_switch_s": 0},
            "store": {"retry_s": 0.5},
        }
    )


async def main(data_dir: str, ws_auth_url: str, rest_url: str, recover_only: bool) -> None:
    s = settings(data_dir, ws_auth_url, rest_url)
    Path(data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
    bus = EventBus()
    store = make_store(s)
    audit = AuditWriter(store, s, bus)
    audit.attach()
    await audit.start()
    venue = KrakenTradingVenue(
        s.kraken,
        Credentials(),
        pairs=(PAIR,),
        nonce=NonceSource(Path(data_dir) / "nonce.state"),
        dms_timeout_s=0,
    )
    handler = ExecutionHandler(s.execution, venue, bus, journal=audit)
    await handler.start()
    portfolio = PortfolioManager((await venue.balances()).get("USD", Decimal(0)), pairs=(PAIR,))
    portfolio.attach(bus)
    result = await recover(s, store, venue, handler, bus)
    handler.attach()
    bus.start()
    await bus.drain()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(
        json.dumps(
            {
                "recovered": result.ok,
                "reason": result.reason,
                "adopted": result.adopted,
                "resolved": result.resolved,
                "never_sent": result.never_sent,
                "fills": result.fills_reported,
            }
        ),
        flush=True,
    )
    if not recover_only:
        trader = asyncio.create_task(trade(bus, handler))
        await stop.wait()
        trader.cancel()
        await asyncio.gather(trader, return_exceptions=True)
    await asyncio.sleep(0.5)
    await bus.drain()
    await bus.stop()
    await handler.stop()
    await audit.stop()
    await store.close()


async def trade(bus: EventBus, handler: ExecutionHandler) -> None:
    """Enter at market when flat, exit at market when holding, every 150 ms."""
    for n in itertools.count():
        await asyncio.sleep(0.15)
        held = handler.pairs[PAIR].held if PAIR in handler.pairs else Decimal(0)
        exiting = held > 0
        await bus.publish(
            TradeSignalApprovedEvent(
                signal_id=f"sig-{os.getpid()}-{n}",
                pair=PAIR,
                side=Side.SELL if exiting else Side.BUY,
                order_type=OrderType.MARKET,
                qty=held if exiting else Decimal(20),
                limit_price=None,
                stop_loss=Decimal("2.17"),
                take_profit=Decimal("2.23"),
                ts_ns=0,
                is_exit=exiting,
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--recover-only" in sys.argv))
