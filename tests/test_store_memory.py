"""What a restart remembers (``store.memory``), on both backends: a run trades, loses,
HALTs and stops; the next run reads back the HALT with its reason, the risk baselines, the
open round trip and the day so far, so restarting resets no limit and forgets no HALT."""

from __future__ import annotations

import time
from decimal import Decimal as D

from test_audit import wait_for
from test_store import PAIR, Backend, backend, report

from gal_friday.bus import EventBus
from gal_friday.config import RiskSettings
from gal_friday.events import (
    Event,
    OrderStatus,
    OrderType,
    PortfolioEvent,
    ResumeEvent,
    Side,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.portfolio import PortfolioManager
from gal_friday.risk import RiskManager, breaches
from gal_friday.store.audit import AuditWriter
from gal_friday.store.memory import day_figures, portfolio_memory, remembered_state

__all__ = ["backend"]

NOW = time.time_ns()  # today: the day's figures are rebuilt for the wall-clock day
B, S, LIMIT, MARKET = Side.BUY, Side.SELL, OrderType.LIMIT, OrderType.MARKET
FILLED = OrderStatus.FILLED


def losing_day() -> list[Event]:
    """A round trip lost (buy 100 at 0.50, sell at 0.45), then a second one still open (200
    bought at 0.46 with a 0.092 fee), valued at 0.44."""
    return [
        report("E1", "sig-1", B, LIMIT, FILLED, NOW + 1, filled="100", last=("100", "0.50"),
               fee="0.10", limit="0.50"),
        report("X1", "sig-1", S, MARKET, FILLED, NOW + 2, filled="100", last=("100", "0.45"),
               fee="0.18"),
        report("E2", "sig-2", B, LIMIT, FILLED, NOW + 3, qty="200", filled="200",
               last=("200", "0.46"), fee="0.092", limit="0.46"),
    ]  # fmt: skip


def halted_by_risk(ts: int) -> TradingStateChangedEvent:
    return TradingStateChangedEvent(
        TradingState.HALTED, TradingState.ACTIVE, "daily drawdown 1.2% > 1%", "risk", ts
    )


async def run_and_stop(backend: Backend, events: list[Event]) -> PortfolioManager:
    """The run before the restart: its portfolio books every event and the audit writer
    records them, with a portfolio snapshot after each (as the engine publishes them)."""
    portfolio = PortfolioManager(D(1000), pairs=(PAIR,), start_ts_ns=NOW)
    writer = AuditWriter(await backend.store(), backend.settings, equity_interval_s=0)
    await writer.start()
    for i, event in enumerate(events):
        portfolio.on_event(event)
        writer.on_event(event)
        portfolio.set_mark(PAIR, D("0.44"), NOW + 100 + i)
        writer.on_event(PortfolioEvent(portfolio.snapshot()))
    await writer.stop()
    return portfolio


async def test_a_halt_is_remembered_with_its_reason_until_an_operator_resumes(
    backend: Backend,
) -> None:
    await run_and_stop(backend, [*losing_day(), halted_by_risk(NOW + 5)])
    for _restart in range(3):  # any number of restarts
        state = await remembered_state(await backend.store())
        assert state is not None and state.halted and state.restored
        assert (state.source, state.reason) == ("risk", "daily drawdown 1.2% > 1%")
        await run_and_stop(backend, [state])  # the next run announces it again

    resumed = TradingStateChangedEvent(
        TradingState.ACTIVE, TradingState.HALTED, "", "operator", NOW + 10
    )
    await run_and_stop(backend, [resumed])
    assert await remembered_state(await backend.store()) is None


async def test_the_risk_manager_announces_a_remembered_halt_which_holds_until_resumed(
    backend: Backend,
) -> None:
    await run_and_stop(backend, [halted_by_risk(NOW)])
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe((TradingStateChangedEvent,), seen.append, name="seen")
    risk = RiskManager(
        RiskSettings(),
        bus,
        PortfolioManager(D(1000)).snapshot,
        taker_fee_pct=D("0.4"),
        remembered=await remembered_state(await backend.store()),
    )
    risk.attach()
    await risk.start()
    assert risk.halted
    bus.start()
    await wait_for(lambda: len(seen) == 1)
    await bus.publish(ResumeEvent("alice"))
    await wait_for(lambda: len(seen) == 2)
    await bus.stop()
    assert not risk.halted
    assert [(e.state, e.restored) for e in seen] == [  # type: ignore[attr-defined]
        (TradingState.HALTED, True),
        (TradingState.ACTIVE, False),
    ]


async def test_the_risk_baselines_and_the_open_trip_carry_on(backend: Backend) -> None:
    before = (await run_and_stop(backend, losing_day())).snapshot()
    memory = await portfolio_memory(await backend.store())
    after = PortfolioManager(before.cash, pairs=(PAIR,))  # the exchange's cash, as live
    after.restore(memory)
    after.set_mark(PAIR, D("0.44"), NOW + 6)
    now = after.snapshot()

    assert now.consecutive_losses == before.consecutive_losses == 1
    assert (now.peak_equity, now.day_start_equity, now.week_start_equity) == (
        before.peak_equity,
        before.day_start_equity,
        before.week_start_equity,
    )
    assert (now.realised_pnl, now.fees_paid) == (before.realised_pnl, before.fees_paid)
    assert now.equity == before.equity
    [pos] = now.positions
    assert (pos.qty, pos.avg_entry) == (D(200), D("0.46"))  # its own entry, not the mark
    limits = RiskSettings(max_daily_drawdown_pct=D("0.5"))
    assert [kind for kind, _ in breaches(now, limits)] == [
        kind for kind, _ in breaches(before, limits)
    ]
    assert "daily_drawdown" in {kind for kind, _ in breaches(now, limits)}

    # the open trip's entry fee is realised when it is sold, as if nothing had restarted
    after.on_event(
        report("X2", "sig-2", S, MARKET, FILLED, NOW + 7, qty="200", filled="200",
               last=("200", "0.44"), fee="0.088")
    )  # fmt: skip
    trip = (D("0.44") - D("0.46")) * 200 - D("0.088") - D("0.092")
    assert after.snapshot().realised_pnl == before.realised_pnl + trip
    assert after.snapshot().consecutive_losses == 2


async def test_the_days_summary_is_rebuilt_from_the_store(backend: Backend) -> None:
    await run_and_stop(backend, losing_day())
    day = await day_figures(await backend.store(), NOW // (86_400 * 10**9))
    assert day is not None
    assert (day.trades, day.wins, day.losses) == (1, 0, 1)
    assert day.realised == (D("0.45") - D("0.50")) * 100 - D("0.18") - D("0.10")
    assert day.fees == D("0.10") + D("0.18") + D("0.092")
    assert day.start_equity == D(1000)

    await run_and_stop(backend, [])  # a restart carries the day on: its summary keeps it
    [row] = await (await backend.store()).fetch("SELECT trades, losses FROM daily_summaries")
    assert (row["trades"], row["losses"]) == (1, 1)
