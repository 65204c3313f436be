"""One wiring for every run: the trading modules on a bus, for a venue, a clock and a cash.

Live and paper trading (``engine``), the candle backtest (``backtest.engine``), the recording
backtest (``backtest.recording``) and a session replay (``replay``) all build their trading
modules here; only the bus (the asyncio ``EventBus`` live, the synchronous ``DirectBus`` in a
backtest, the replay's split bus), the venue (paper, Kraken, the backtest's or the replay's)
and the clock (wall, simulated, recorded) differ. So a rule added to the strategy, risk,
portfolio or execution handler holds in every run at once.

Subscription order is part of the contract: portfolio, risk, strategy, execution. A
synchronous bus delivers in that order, so the portfolio has booked a fill before risk sizes
the next signal on it, and the strategy has seen the fill before the handler acts on its own
follow-ups.

Every trading module has the same lifecycle (:class:`Component`): ``attach()`` subscribes
(before the bus starts, so nothing is missed), ``await start()`` begins its own work (the
execution handler starts its venue and timer), ``await stop()`` ends it (in reverse order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from gal_friday.bus import EventBus
from gal_friday.config import ExecutionSettings, Settings
from gal_friday.domain import PortfolioMemory
from gal_friday.events import TradingStateChangedEvent, now_ns
from gal_friday.execution.handler import ExecutionHandler, OrderJournal
from gal_friday.execution.venue import TradingVenue
from gal_friday.portfolio import PortfolioManager
from gal_friday.risk import RiskManager
from gal_friday.strategy import StrategyArbitrator

StrategyFactory = Callable[[Settings, EventBus], StrategyArbitrator]


class Component(Protocol):
    """A bus module's lifecycle, the same for every module and every run."""

    def attach(self) -> object: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def default_strategy(settings: Settings, bus: EventBus) -> StrategyArbitrator:
    """The configured StrategyArbitrator (limit entries joining the bid)."""
    return StrategyArbitrator(
        settings.strategy,
        settings.fees,
        bus,
        pairs=settings.pairs,
        venue_brackets=settings.execution.protective_orders,
    )


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a restart carries on from (read by ``store.memory``): the previous run's
    portfolio and the HALT or REDUCING it left in force. ``cash`` takes the remembered cash
    (paper trading); a live run keeps the exchange's balance."""

    portfolio: PortfolioMemory | None = None
    trading: TradingStateChangedEvent | None = None
    cash: bool = False


@dataclass(frozen=True, slots=True)
class TradingModules:
    """The four trading modules of one run, in their subscription order."""

    portfolio: PortfolioManager
    risk: RiskManager
    strategy: StrategyArbitrator
    execution: ExecutionHandler

    @property
    def components(self) -> tuple[Component, ...]:
        return (self.portfolio, self.risk, self.strategy, self.execution)

    def attach(self) -> None:
        for component in self.components:
            component.attach()

    async def start(self) -> None:
        for component in self.components:
            await component.start()

    async def stop(self) -> None:
        for component in reversed(self.components):
            await component.stop()


def build_trading(
    settings: Settings,
    bus: EventBus,
    venue: TradingVenue,
    *,
    cash: Decimal,
    clock: Callable[[], int] = now_ns,
    start_ts_ns: int = 0,
    pairs: tuple[str, ...] | None = None,
    strategy: StrategyFactory = default_strategy,
    execution: ExecutionSettings | None = None,
    journal: OrderJournal | None = None,
    memory: Remembered | None = None,
) -> TradingModules:
    """Portfolio, risk, strategy and execution handler on ``bus`` for ``venue``, all attached
    (see the module doc); ``await modules.start()`` starts them. ``memory`` carries on from
    an earlier run (a restart with a store): its portfolio and its HALT or REDUCING."""
    portfolio = PortfolioManager(
        cash, pairs=pairs or settings.pairs, start_ts_ns=start_ts_ns, bus=bus
    )
    if memory is not None and memory.portfolio is not None:
        portfolio.restore(memory.portfolio, cash=memory.cash)
    risk = RiskManager(
        settings.risk,
        bus,
        portfolio.snapshot,
        taker_fee_pct=settings.fees.taker_pct,
        clock=clock,
        remembered=memory.trading if memory is not None else None,
    )
    modules = TradingModules(
        portfolio,
        risk,
        strategy(settings, bus),
        ExecutionHandler(
            execution or settings.execution, venue, bus, clock_ns=clock, journal=journal
        ),
    )
    modules.attach()
    return modules
