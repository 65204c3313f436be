"""Crash recovery against the simulator's private API over loopback (the Kraken trading
venue, the real store and audit writer): the bot died at the worst moments the reliability
review found, and a fresh run recovers.

The previous run's death is written down exactly: the store holds what it had made durable
(the entry's signal and its order intent: an intent is committed before the order is sent),
and the exchange holds what the dead bot had sent (the order, with our client id, filled).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path

import pytest
from handmarket import HandMarket, move_book
from pydantic import SecretStr

from gal_friday.bus import EventBus
from gal_friday.config import Credentials, Settings
from gal_friday.events import (
    BookEvent,
    Event,
    HaltEvent,
    OrderType,
    PortfolioEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.paper import PaperVenue
from gal_friday.execution.venue import OrderRequest, VenueFill
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.private import KrakenPrivateRest
from gal_friday.kraken.trading import KrakenTradingVenue
from gal_friday.portfolio import PortfolioManager
from gal_friday.recovery import RecoveryResult, recover, recover_paper
from gal_friday.sim.server import SimExchange
from gal_friday.store import make_store
from gal_friday.store.audit import AuditWriter
from gal_friday.store.base import Record, Store, StoreUnavailable
from gal_friday.store.memory import account_of, portfolio_memory
from gal_friday.wiring import Remembered, TradingModules, build_trading

PAIR = "XRP/USD"
KEY = "recovery-key"
SECRET = base64.b64encode(bytes(range(30, 94))).decode()
CREDS = Credentials(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data folder every start of one test shares."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@dataclass
class Restart:
    """One bot start on a data folder: store, audit, venue, handler, portfolio, bus."""

    settings: Settings
    store: Store
    audit: AuditWriter
    venue: KrakenTradingVenue
    handler: ExecutionHandler
    portfolio: PortfolioManager
    bus: EventBus
    seen: list[Event]

    async def recover(self) -> RecoveryResult:
        result = await recover(self.settings, self.store, self.venue, self.handler, self.bus)
        await self.bus.drain()
        await self.bus.publish(PortfolioEvent(self.portfolio.snapshot()))
        await self.bus.drain()
        await self.audit.flush()
        return result

    async def until(self, what: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not what():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)
        await self.bus.drain()


Start = Callable[[], Awaitable["Restart"]]


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange(HandMarket(), seed=3)
    exchange.private.add_key(KEY, SECRET)
    async with exchange:
        yield exchange


def settings_for(sim: SimExchange, data: Path) -> Settings:
    return Settings.model_validate(
        {
            "exchange": "kraken",
            "mode": "live",
            "pairs": [PAIR, "DOGE/USD"],
            "paths": {"data_dir": str(data)},
            "kraken": {
                "ws_private_url": sim.ws_auth_url,
                "rest_url": sim.rest_url,
                "request_timeout_s": 2.0,
            },
            "execution": {"busy_retry_s": 0.01, "reconcile_interval_s": 0},
            "store": {"retry_s": 0.05},
        }
    )


@pytest.fixture
async def start(sim: SimExchange, data: Path) -> AsyncIterator[Start]:
    runs: list[Restart] = []

    async def one() -> Restart:
        s = settings_for(sim, data)
        store = make_store(s)
        await store.connect()
        bus = EventBus()
        seen: list[Event] = []
        bus.subscribe((Event,), seen.append, name="seen")
        audit = AuditWriter(store, s, bus, flush_interval_s=0.01)
        audit.attach()
        await audit.start()
        venue = KrakenTradingVenue(
            s.kraken,
            CREDS,
            pairs=s.pairs,
            nonce=NonceSource(),
            ws_url=sim.ws_auth_url,
            rest_url=sim.rest_url,
        )
        balances = await venue.balances()
        portfolio = PortfolioManager(balances["USD"], pairs=s.pairs, bus=bus)
        portfolio.attach()
        handler = ExecutionHandler(s.execution, venue, bus, journal=audit)
        handler.attach()
        await handler.start()
        bus.start()
        run = Restart(s, store, audit, venue, handler, portfolio, bus, seen)
        runs.append(run)
        return run

    yield one
    for run in runs:
        await run.bus.stop()
        await run.handler.stop()
        await run.audit.stop()
        await run.store.close()


def signal(sig: str, stop: str = "2.10000", target: str = "2.30000") -> TradeSignalProposedEvent:
    return TradeSignalProposedEvent(
        signal_id=sig,
        pair=PAIR,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        entry_price=D("2.20000"),
        stop_loss=D(stop),
        take_profit=D(target),
        prob_up=0.7,
        model_id="m",
        ts_ns=time.time_ns(),
    )


async def died_after_sending(
    sim: SimExchange, data: Path, coid: str, sig: str, limit: str = "2.20000"
) -> None:
    """The previous run: its entry's signal and order intent are in the store, the order
    reached the exchange (our client id with it) and filled; then kill -9, before any
    acknowledgement or fill was recorded."""
    s = settings_for(sim, data)
    store = make_store(s)  # the same file the next run opens
    await store.connect()
    writer = AuditWriter(store, s)
    await writer.start()
    writer.on_event(signal(sig))
    order = OrderRequest(coid, PAIR, Side.BUY, OrderType.LIMIT, D(100), D(limit), sig)
    await writer.record_order_intent(order)
    await writer.flush()
    await store.close()  # the writer is never stopped: its process died
    rest = KrakenPrivateRest(sim.rest_url, CREDS, NonceSource())
    try:
        await rest.add_order(PAIR, "buy", "limit", D(100), D(limit), coid)
    finally:
        await rest.close()


def protection(sim: SimExchange) -> list[tuple[str, D, D]]:
    return sorted(
        (o.params.order_type, D(str(o.params.qty)), D(str(o.params.trigger_price)))
        for o in sim.trading.open_orders()
    )


async def test_an_entry_filled_while_the_bot_was_dead_is_found_booked_and_protected(
    sim: SimExchange, start: Start, data: Path
) -> None:
    await died_after_sending(sim, data, "gfe1a", "sig-1")
    run = await start()
    result = await run.recover()

    assert result.ok and result.fills_reported == 1 and result.reprotected == {PAIR: D(100)}
    fills = await run.store.fetch("SELECT client_order_id, qty, price FROM fills")
    assert [(f["client_order_id"], D(str(f["qty"])), D(str(f["price"]))) for f in fills] == [
        ("gfe1a", D(100), D("2.20000"))
    ]
    order = await run.store.order("gfe1a")
    assert order is not None and order.status == "filled" and order.filled_qty == D(100)
    await run.until(lambda: len(sim.trading.open_orders()) == 2)
    assert protection(sim) == [  # its own trade's brackets
        ("stop-loss", D(100), D("2.10000")),
        ("take-profit", D(100), D("2.30000")),
    ]
    [pos] = run.portfolio.snapshot().positions
    assert (pos.qty, pos.avg_entry) == (D(100), D("2.20000"))  # booked at its fill price
    [stored] = [p for p in await run.store.positions() if p.pair == PAIR]
    assert stored.qty == sim.trading.account.balances["XRP"] == D(100)


async def test_an_entry_adopted_resting_is_protected_by_its_own_signal_when_it_fills(
    sim: SimExchange, start: Start, data: Path
) -> None:
    """The dead run's entry still rests at the exchange; the new run adopts it, and when
    it fills the position gets the stop and target of the signal that sent it (found by
    the crash loop: the adopted entry's fill, and its timeout's market rest, went unprotected)."""
    await died_after_sending(sim, data, "gfe1c", "sig-1", limit="2.18000")
    run = await start()
    result = await run.recover()
    assert result.ok and result.adopted == ["gfe1c"]
    assert [o.params.cl_ord_id for o in sim.trading.open_orders()] == ["gfe1c"]  # nothing filled
    move_book(sim, PAIR, [("2.17000", "1000")], [("2.17500", "1000")])
    await run.until(lambda: len(sim.trading.open_orders()) == 2)
    assert protection(sim) == [
        ("stop-loss", D(100), D("2.10000")),
        ("take-profit", D(100), D("2.30000")),
    ]


async def test_protection_never_borrows_another_trades_stop(
    sim: SimExchange, start: Start, data: Path
) -> None:
    """An older round trip of the pair left its stop and target in the store at other
    prices; the new position is protected at its own."""
    s = settings_for(sim, data)
    store = make_store(s)
    await store.connect()
    writer = AuditWriter(store, s)
    await writer.start()
    writer.on_event(signal("sig-0", stop="1.50000", target="3.00000"))
    await writer.stop()
    await store.write(
        [
            _order_row("gfs0a", "sig-0", "stop-loss", "1.50000", ts=1),
            _order_row("gft0a", "sig-0", "take-profit", "3.00000", ts=2),
        ]
    )
    await store.close()
    await died_after_sending(sim, data, "gfe1b", "sig-1")
    run = await start()
    result = await run.recover()
    assert result.ok
    await run.until(lambda: len(sim.trading.open_orders()) == 2)
    assert [price for _, _, price in protection(sim)] == [D("2.10000"), D("2.30000")]


async def test_an_execution_the_fills_do_not_explain_halts_naming_the_order(
    sim: SimExchange, start: Start, data: Path
) -> None:
    """The exchange says the order executed 100 but its trade history shows none of it (a
    history that lags, a page lost): no P&L may be booked from a guess; recovery HALTs."""
    await died_after_sending(sim, data, "gfe1c", "sig-1")
    run = await start()

    async def no_fills(ts_ns: int) -> list[VenueFill]:
        return []

    run.venue.fills_since = no_fills  # type: ignore[method-assign]
    result = await run.recover()
    assert not result.ok and "gfe1c" in result.reason and "executed 100" in result.reason
    [halt] = [e for e in run.seen if isinstance(e, HaltEvent)]
    assert halt.source == "recovery" and "gfe1c" in halt.reason
    assert await run.store.fetch("SELECT * FROM fills") == []


def _order_row(coid: str, trade: str, otype: str, trigger: str, ts: int) -> Record:
    return Record(
        "order",
        {
            "client_order_id": coid,
            "trade_id": trade,
            "signal_id": trade,
            "pair": PAIR,
            "side": "sell",
            "order_type": otype,
            "qty": D(50),
            "limit_price": None,
            "trigger_price": D(trigger),
            "exchange_order_id": f"O-{coid}",
            "status": "cancelled",
            "filled_qty": D(0),
            "avg_price": None,
            "fees": D(0),
            "reason": None,
            "created_ts_ns": ts,
            "updated_ts_ns": ts,
        },
    )


class AwayStore:
    """The run's store, made unreachable and back by the test (every read fails meanwhile,
    as a locked or lost database's do)."""

    def __init__(self, store: Store) -> None:
        self.store, self.away = store, True
        self.real_fetch = store.fetch

    async def fetch(self, sql: str, *params: object) -> list[dict[str, object]]:
        if self.away:
            raise StoreUnavailable("database is locked")
        return await self.real_fetch(sql, *params)


async def test_a_store_away_at_recovery_halts_hands_over_the_holdings_and_retries(
    sim: SimExchange, start: Start, data: Path
) -> None:
    """The review's locked database at a live start: 1,800 XRP without a stop for 110 s.
    Now the HALT still hands what the exchange holds to every module (so the HALT policy can
    flatten it, which needs no store), and the recovery run again once the store answers
    books the fill and protects the position at its own brackets."""
    await died_after_sending(sim, data, "gfe1d", "sig-1")
    run = await start()
    away = AwayStore(run.store)
    run.store.fetch = away.fetch  # type: ignore[method-assign]
    failed = await run.recover()
    assert not failed.ok and failed.store_away
    assert any(isinstance(e, HaltEvent) and e.source == "recovery" for e in run.seen)
    [pos] = run.portfolio.snapshot().positions
    assert pos.qty == D(100)
    assert run.handler.pairs[PAIR].held == D(100)  # a flatten's exit can sell it

    away.away = False
    again = await run.recover()
    assert again.ok and again.fills_reported == 1
    await run.until(lambda: len(sim.trading.open_orders()) == 2)
    assert [price for _, _, price in protection(sim)] == [D("2.10000"), D("2.30000")]


@dataclass
class PaperRun:
    store: Store
    audit: AuditWriter
    paper: PaperVenue
    modules: TradingModules
    bus: EventBus


async def paper_run(s: Settings, memory: Remembered | None = None) -> PaperRun:
    """A paper start as the engine makes it: the account and portfolio carried on from the
    store's memory, when there is one."""
    store = make_store(s)
    await store.connect()
    bus = EventBus()
    audit = AuditWriter(store, s, bus, flush_interval_s=0.01, equity_interval_s=0)
    audit.attach()
    await audit.start()
    paper = PaperVenue(s.paper, s.fees)
    paper.attach(bus)
    cash = s.paper.initial_cash_usd
    if memory is not None and memory.portfolio is not None:
        paper.restore_account(account_of(memory.portfolio))
        cash = account_of(memory.portfolio)["USD"]
    modules = build_trading(s, bus, paper, cash=cash, journal=audit, memory=memory)
    await modules.start()
    bus.start()
    return PaperRun(store, audit, paper, modules, bus)


def book(bid: str, ask: str) -> BookEvent:
    p = lambda x: int(D(x).scaleb(5))  # noqa: E731
    t = time.time_ns()
    return BookEvent(PAIR, ((p(bid), 10**12),), ((p(ask), 10**12),), 5, 8, 0, 1, False, "", t)


async def test_a_paper_restart_carries_the_account_on_and_protects_its_position(
    data: Path,
) -> None:
    """Paper trading keeps its account only in memory: a restart must carry on with the
    cash and the position the store recorded (not the configured starting cash and nothing),
    close the dead venue's orders, and protect the position at its own brackets again."""
    s = Settings.model_validate(
        {"pairs": [PAIR], "paths": {"data_dir": str(data)}, "paper": {"latency_ms": 0}}
    )
    first = await paper_run(s)
    first.audit.on_event(signal("sig-1"))
    await first.bus.publish(book("2.19000", "2.20000"))
    await first.bus.publish(
        TradeSignalApprovedEvent(
            "sig-1", PAIR, Side.BUY, OrderType.LIMIT, D(100), D("2.20000"),
            D("2.10000"), D("2.30000"), time.time_ns(),
        )
    )  # fmt: skip
    await wait(lambda: len(first.modules.execution.working_orders()) == 2)
    await first.bus.publish(PortfolioEvent(first.modules.portfolio.snapshot()))
    await first.bus.drain()
    await first.audit.flush()  # then the process dies: nothing is stopped cleanly
    before = first.modules.portfolio.snapshot()

    memory = Remembered(await portfolio_memory(first.store), None, cash=True)
    second = await paper_run(s, memory)
    execution = second.modules.execution
    result = await recover_paper(s, second.store, second.paper, execution, second.bus)
    await wait(lambda: len(second.paper.engine.open_orders()) == 2)
    assert result.ok and len(result.resolved) == 2  # the dead venue's stop and target
    placed = sorted(
        (o.type.value, o.qty, o.trigger_price) for o in second.paper.engine.open_orders()
    )
    assert placed == [("stop-loss", D(100), D("2.10000")), ("take-profit", D(100), D("2.30000"))]
    assert second.paper.balance["XRP"] == D(100)
    assert second.paper.balance["USD"] == before.cash
    now = second.modules.portfolio.snapshot()
    assert now.cash == before.cash and now.positions[0].avg_entry == D("2.20000")
    for run in (first, second):
        await run.bus.stop()
        await run.modules.stop()
        await run.audit.stop()
        await run.store.close()


async def wait(what: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
