"""RiskManager: pre-trade checks, position sizing and HALT triggers [FR-501..508].

The core is pure: :func:`check_signal` takes a proposed signal, the portfolio as it is right
now, the pair's exchange rules, the market price and the HALT state, and returns a
:class:`RiskVerdict` (approved or not, the sized quantity, the tick-rounded limit price and
every check it ran). :func:`evaluate_halt` says whether the portfolio breaches a drawdown or
consecutive-loss limit. :class:`RiskManager` wires both to the event bus.

Money is Decimal throughout; there is no float in sizing. Everything fails closed: missing
exchange rules, a missing market price or an unreadable portfolio reject an entry.

The RiskManager owns the trading state (``gal_friday.trading_state``): it applies HALT, REDUCE
and RESUME commands and its own limit breaches, and announces every change with one
``TradingStateChangedEvent`` that the other modules follow.

Entries (spot, long only):

1. ``halt``: no entries while HALTED; ``reducing``: none while REDUCING either (a
   ``ReduceEvent``: positions kept, only exits pass). A ``ResumeEvent`` ends both.
2. ``risk_limits``: no entries while the portfolio breaches a drawdown / loss-streak limit.
3. ``instrument``: the pair's rules are known and the pair is online.
4. ``market_price``: a market price (book mid) is known.
5. ``price_tick``: the entry is rounded to the tick, buys down and sells up, so the rounded
   price is never worse than the one proposed.
6. ``stop_side``: the stop is below the entry for a buy, above it for a sell.
7. ``fat_finger``: ``|entry - market| / market <= fat_finger_pct``.
8. ``sizing``: ``qty = equity * risk_per_trade_pct / 100 / |entry - stop|``.
9. ``max_order_value``: notional <= ``max_order_value_usd`` (shrinks to fit).
10. ``asset_exposure``: the pair's position value after a buy <= ``max_asset_exposure_pct``
    of equity (shrinks to fit; rejects when there is no room).
11. ``total_exposure``: all positions after a buy <= ``max_total_exposure_pct`` of equity
    (shrinks to fit; rejects when there is no room).
12. ``free_balance`` (buy): notional + taker fee <= free cash (shrinks to fit) /
    ``position_held`` (sell): a sell needs a position and sells at most what is held.
13. ``lot_size``: qty rounded DOWN to ``qty_increment``.
14. ``min_qty`` / ``min_cost``: qty >= ``qty_min`` and notional >= ``cost_min``, checked last
    so every shrink above is followed by the exchange minimums.

Exits (``signal.is_exit``) go through even when HALTED or REDUCING: they sell the whole position,
rounded down to the lot, priced to the tick and checked against the exchange minimums.

Checks stop at the first failure; its ``"name: detail"`` is the verdict's ``reason``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from gal_friday.bus import EventBus, Policy
from gal_friday.config import RiskSettings
from gal_friday.domain import InstrumentSpec, PortfolioSnapshot
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    Event,
    InstrumentEvent,
    OrderType,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingState,
    TradingStateChangedEvent,
    now_ns,
)
from gal_friday.trading_state import TRADING_COMMANDS, TradingStateMachine

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    """The outcome of the pre-trade checks for one signal."""

    approved: bool
    qty: Decimal  # sized and lot-rounded; 0 when rejected before sizing
    limit_price: Decimal | None  # entry rounded to the tick; None when rejected before rounding
    checks: tuple[CheckResult, ...]
    reason: str | None  # "name: detail" of the first failed check; None when approved


def round_to_increment(value: Decimal, increment: Decimal, *, up: bool) -> Decimal:
    """``value`` on the ``increment`` grid, rounded up or down (never to nearest)."""
    if increment <= 0:
        return value
    steps = (value / increment).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return steps * increment


def round_price(price: Decimal, increment: Decimal, side: Side) -> Decimal:
    """Buys round down, sells round up: the rounded limit is never a worse price."""
    return round_to_increment(price, increment, up=side is Side.SELL)


def round_qty(qty: Decimal, increment: Decimal) -> Decimal:
    """Quantities always round down, so no limit is ever exceeded by rounding."""
    return round_to_increment(qty, increment, up=False)


def breaches(portfolio: PortfolioSnapshot, settings: RiskSettings) -> list[tuple[str, str]]:
    """Every HALT-worthy limit the portfolio is at or beyond, as ``(kind, reason)``."""
    found: list[tuple[str, str]] = []
    for kind, drawdown, limit in (
        ("total_drawdown", portfolio.total_drawdown, settings.max_total_drawdown_pct),
        ("daily_drawdown", portfolio.daily_drawdown, settings.max_daily_drawdown_pct),
        ("weekly_drawdown", portfolio.weekly_drawdown, settings.max_weekly_drawdown_pct),
    ):
        pct = drawdown * HUNDRED
        if limit > 0 and pct >= limit:
            found.append((kind, f"{kind.replace('_', ' ')} {pct:.2f}% >= limit {limit}%"))
    if portfolio.consecutive_losses >= settings.max_consecutive_losses:
        found.append(
            (
                "consecutive_losses",
                f"consecutive losses {portfolio.consecutive_losses} >= limit "
                f"{settings.max_consecutive_losses}",
            )
        )
    return found


def evaluate_halt(portfolio: PortfolioSnapshot, settings: RiskSettings) -> str | None:
    """Why to HALT (every breached limit, joined by "; "), or None when within every limit."""
    found = breaches(portfolio, settings)
    return "; ".join(reason for _, reason in found) if found else None


@dataclass(slots=True)
class _Run:
    """Accumulates the checks of one evaluation."""

    checks: list[CheckResult] = field(default_factory=list)

    def ok(self, name: str, detail: str = "ok") -> None:
        self.checks.append(CheckResult(name, True, detail))

    def reject(
        self, name: str, detail: str, qty: Decimal = ZERO, price: Decimal | None = None
    ) -> RiskVerdict:
        self.checks.append(CheckResult(name, False, detail))
        return RiskVerdict(False, qty, price, tuple(self.checks), f"{name}: {detail}")

    def approve(self, qty: Decimal, price: Decimal) -> RiskVerdict:
        return RiskVerdict(True, qty, price, tuple(self.checks), None)


def _check_minimums(
    run: _Run, qty: Decimal, price: Decimal, instrument: InstrumentSpec
) -> RiskVerdict | None:
    if qty <= 0 or qty < instrument.qty_min:
        return run.reject(
            "min_qty", f"qty {qty} below exchange minimum {instrument.qty_min}", qty, price
        )
    run.ok("min_qty", f"qty {qty} >= {instrument.qty_min}")
    notional = qty * price
    if notional < instrument.cost_min:
        return run.reject(
            "min_cost",
            f"notional {notional} below exchange minimum {instrument.cost_min}",
            qty,
            price,
        )
    run.ok("min_cost", f"notional {notional} >= {instrument.cost_min}")
    return None


def _check_exit(
    signal: TradeSignalProposedEvent,
    portfolio: PortfolioSnapshot,
    instrument: InstrumentSpec | None,
    halted: bool,
) -> RiskVerdict:
    run = _Run()
    run.ok("halt", "exit allowed while halted" if halted else "not halted")
    if instrument is None:
        return run.reject("instrument", f"no exchange rules for {signal.pair}")
    run.ok("instrument", f"rules for {signal.pair}")
    if signal.side is not Side.SELL:
        return run.reject("position_held", "spot is long only: an exit must be a sell")
    position = portfolio.position(signal.pair)
    if position is None or position.qty <= 0:
        return run.reject("position_held", f"no {signal.pair} position to exit")
    run.ok("position_held", f"holding {position.qty}")
    price = round_price(signal.entry_price, instrument.price_increment, signal.side)
    if price <= 0:
        return run.reject("price_tick", f"entry {signal.entry_price} rounds to {price}")
    run.ok("price_tick", f"{signal.entry_price} -> {price}")
    qty = round_qty(position.qty, instrument.qty_increment)
    run.ok("lot_size", f"{position.qty} -> {qty}")
    failed = _check_minimums(run, qty, price, instrument)
    return failed if failed is not None else run.approve(qty, price)


def check_signal(
    signal: TradeSignalProposedEvent,
    portfolio: PortfolioSnapshot,
    instrument: InstrumentSpec | None,
    market_price: Decimal | None,
    halted: bool,
    *,
    settings: RiskSettings,
    fee_pct: Decimal,
    reducing: str | None = None,
) -> RiskVerdict:
    """Run every pre-trade check on ``signal``; pure (no I/O, no clock, no state).

    ``reducing`` is the REDUCING reason (None when not reducing): entries are refused, exits
    pass as they do while HALTED.
    """
    if signal.is_exit:
        return _check_exit(signal, portfolio, instrument, halted)

    run = _Run()
    side = signal.side
    if halted:
        return run.reject("halt", "trading is HALTED: no new entries")
    if reducing is not None:
        return run.reject(
            "reducing", f"trading is REDUCING ({reducing}): exits only, no new entries"
        )
    run.ok("halt", "not halted")
    breach = evaluate_halt(portfolio, settings)
    if breach is not None:
        return run.reject("risk_limits", breach)
    run.ok("risk_limits", "within drawdown and loss-streak limits")
    if instrument is None:
        return run.reject("instrument", f"no exchange rules for {signal.pair}")
    if not instrument.tradable:
        return run.reject("instrument", f"{signal.pair} status is {instrument.status}")
    run.ok("instrument", f"rules for {signal.pair}")
    if market_price is None or market_price <= 0:
        return run.reject("market_price", f"no market price for {signal.pair}")
    run.ok("market_price", f"{market_price}")

    price = round_price(signal.entry_price, instrument.price_increment, side)
    if price <= 0:
        return run.reject("price_tick", f"entry {signal.entry_price} rounds to {price}")
    run.ok("price_tick", f"{signal.entry_price} -> {price}")

    stop = signal.stop_loss
    if (side is Side.BUY and stop >= price) or (side is Side.SELL and stop <= price):
        where = "below" if side is Side.BUY else "above"
        return run.reject(
            "stop_side",
            f"stop {stop} must be {where} the entry {price} for a {side.value}",
            price=price,
        )
    run.ok("stop_side", f"stop {stop} vs entry {price}")

    deviation = abs(price - market_price) / market_price * HUNDRED
    if deviation > settings.fat_finger_pct:
        return run.reject(
            "fat_finger",
            f"entry {price} is {deviation:.2f}% from market "
            f"{market_price} (limit {settings.fat_finger_pct}%)",
            price=price,
        )
    run.ok("fat_finger", f"{deviation:.2f}% from market")

    equity = portfolio.equity
    if equity <= 0:
        return run.reject("sizing", f"equity {equity} is not positive", price=price)
    risk_amount = equity * settings.risk_per_trade_pct / HUNDRED
    distance = abs(price - stop)
    qty = risk_amount / distance
    run.ok("sizing", f"{risk_amount} at risk / stop distance {distance} = {qty}")

    def shrink(name: str, limit_desc: str, max_qty: Decimal) -> RiskVerdict | None:
        nonlocal qty
        if max_qty <= 0:
            return run.reject(name, f"no room: {limit_desc}", price=price)
        if qty > max_qty:
            run.ok(name, f"shrunk {qty} -> {max_qty} ({limit_desc})")
            qty = max_qty
        else:
            run.ok(name, f"within {limit_desc}")
        return None

    failed = shrink(
        "max_order_value",
        f"max order value {settings.max_order_value_usd} USD",
        settings.max_order_value_usd / price,
    )
    if failed is not None:
        return failed

    if side is Side.BUY:
        position = portfolio.position(signal.pair)
        held_value = position.value if position is not None else ZERO
        asset_cap = equity * settings.max_asset_exposure_pct / HUNDRED
        failed = shrink(
            "asset_exposure",
            f"{signal.pair} {held_value} of cap {asset_cap} "
            f"({settings.max_asset_exposure_pct}% of equity)",
            (asset_cap - held_value) / price,
        )
        if failed is not None:
            return failed
        exposure = portfolio.exposure
        total_cap = equity * settings.max_total_exposure_pct / HUNDRED
        failed = shrink(
            "total_exposure",
            f"exposure {exposure} of cap {total_cap} "
            f"({settings.max_total_exposure_pct}% of equity)",
            (total_cap - exposure) / price,
        )
        if failed is not None:
            return failed
        cost_per_unit = price * (1 + fee_pct / HUNDRED)
        failed = shrink(
            "free_balance",
            f"free cash {portfolio.free_cash} with {fee_pct}% taker fee",
            portfolio.free_cash / cost_per_unit,
        )
        if failed is not None:
            return failed
    else:
        position = portfolio.position(signal.pair)
        if position is None or position.qty <= 0:
            return run.reject(
                "position_held",
                f"no {signal.pair} position to sell (spot, long only: cannot open a short)",
                price=price,
            )
        failed = shrink("position_held", f"holding {position.qty}", position.qty)
        if failed is not None:
            return failed

    rounded = round_qty(qty, instrument.qty_increment)
    run.ok("lot_size", f"{qty} -> {rounded}")
    failed = _check_minimums(run, rounded, price, instrument)
    return failed if failed is not None else run.approve(rounded, price)


class RiskManager:
    """Bus module: checks each proposed signal and publishes its approval or rejection.

    Keeps the latest exchange rules and book mid per pair and owns the trading state (its
    :class:`~gal_friday.trading_state.TradingStateMachine`: HALT / REDUCE / RESUME commands in,
    one ``TradingStateChangedEvent`` out per change); reads the portfolio synchronously at the
    moment of each check. After each decision it evaluates the HALT limits and HALTs (source
    ``risk``) on every new breach.
    """

    NAME = "risk"

    def __init__(
        self,
        settings: RiskSettings,
        bus: EventBus,
        portfolio: Callable[[], PortfolioSnapshot],
        *,
        taker_fee_pct: Decimal,
        clock: Callable[[], int] = now_ns,
        remembered: TradingStateChangedEvent | None = None,
    ) -> None:
        self.settings = settings
        self.taker_fee_pct = taker_fee_pct
        self._bus = bus
        self._portfolio = portfolio
        self._clock = clock
        self.instruments: dict[str, InstrumentSpec] = {}
        self.market_prices: dict[str, Decimal] = {}
        self.trading = TradingStateMachine(remembered)
        self._remembered = remembered
        self._active_breaches: set[str] = set()
        self.approved = 0
        self.rejected = 0

    def attach(self) -> None:
        """One BLOCK subscription for every type it needs, so HALT, book and signal events
        are handled in the order they were published."""
        self._bus.subscribe(
            (
                TradeSignalProposedEvent,
                InstrumentEvent,
                BookEvent,
                BookInvalidatedEvent,
                *TRADING_COMMANDS,
            ),
            self.handle,
            name=self.NAME,
            policy=Policy.BLOCK,
        )

    async def start(self) -> None:
        """Announce a HALT or REDUCING remembered from an earlier run (it holds until an
        operator resumes it; everyone who follows the state learns it before any entry)."""
        remembered, self._remembered = self._remembered, None
        if remembered is not None and not remembered.active:
            log.warning(
                "trading state %s remembered from an earlier run: %s",
                remembered.state,
                remembered.cause,
                extra={"state": remembered.state.value, "source": remembered.source},
            )
            await self._bus.publish(remembered)

    async def stop(self) -> None:
        """Nothing to stop (see :meth:`start`)."""

    @property
    def state(self) -> TradingState:
        return self.trading.state

    @property
    def halted(self) -> bool:
        return self.trading.halted

    @property
    def reducing(self) -> str | None:
        """The REDUCING reason as ``"source: reason"``, None when not REDUCING."""
        now = self.trading.current
        return now.cause if now.reducing else None

    def check(
        self,
        signal: TradeSignalProposedEvent,
        portfolio: PortfolioSnapshot,
        instrument: InstrumentSpec | None,
        market_price: Decimal | None,
        halted: bool,
    ) -> RiskVerdict:
        return check_signal(
            signal,
            portfolio,
            instrument,
            market_price,
            halted,
            settings=self.settings,
            fee_pct=self.taker_fee_pct,
            reducing=self.reducing,
        )

    def evaluate_halt(self, portfolio: PortfolioSnapshot) -> str | None:
        return evaluate_halt(portfolio, self.settings)

    async def handle(self, event: Event) -> None:
        if isinstance(event, TradeSignalProposedEvent):
            await self._on_signal(event)
        elif isinstance(event, BookEvent):
            bid, ask = event.best_bid(), event.best_ask()
            if bid is not None and ask is not None:
                self.market_prices[event.pair] = (bid + ask) / 2
            else:
                self.market_prices.pop(event.pair, None)
        elif isinstance(event, BookInvalidatedEvent):
            self.market_prices.pop(event.pair, None)
        elif isinstance(event, InstrumentEvent):
            self.instruments[event.pair] = event.spec
        elif isinstance(event, TRADING_COMMANDS):
            await self._announce(self.trading.apply(event))

    async def _on_signal(self, signal: TradeSignalProposedEvent) -> None:
        try:
            portfolio: PortfolioSnapshot | None = self._portfolio()
        except Exception:
            log.exception("portfolio unavailable", extra={"signal_id": signal.signal_id})
            portfolio = None
        if portfolio is None:
            verdict = RiskVerdict(
                False,
                ZERO,
                None,
                (CheckResult("portfolio", False, "portfolio state unavailable"),),
                "portfolio: portfolio state unavailable",
            )
        else:
            verdict = self.check(
                signal,
                portfolio,
                self.instruments.get(signal.pair),
                self.market_prices.get(signal.pair),
                self.halted,
            )
        ts = self._clock()
        if verdict.approved:
            self.approved += 1
            limit = verdict.limit_price if signal.order_type is OrderType.LIMIT else None
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "signal approved",
                    extra={
                        "signal_id": signal.signal_id,
                        "pair": signal.pair,
                        "qty": str(verdict.qty),
                        "limit_price": str(limit),
                    },
                )
            await self._bus.publish(
                TradeSignalApprovedEvent(
                    signal.signal_id,
                    signal.pair,
                    signal.side,
                    signal.order_type,
                    verdict.qty,
                    limit,
                    signal.stop_loss,
                    signal.take_profit,
                    ts,
                    signal.is_exit,
                    _checks(verdict),
                )
            )
        else:
            self.rejected += 1
            reason = verdict.reason or "rejected"
            log.warning(
                "signal rejected: %s",
                reason,
                extra={"signal_id": signal.signal_id, "pair": signal.pair, "reason": reason},
            )
            await self._bus.publish(
                TradeSignalRejectedEvent(
                    signal.signal_id, signal.pair, reason, ts, _checks(verdict)
                )
            )
        if portfolio is not None:
            await self._check_halt(portfolio)

    async def _check_halt(self, portfolio: PortfolioSnapshot) -> None:
        found = breaches(portfolio, self.settings)
        kinds = {kind for kind, _ in found}
        new = [reason for kind, reason in found if kind not in self._active_breaches]
        self._active_breaches = kinds  # a limit back within bounds can fire again later
        if new:
            reason = "; ".join(new)
            changed = self.trading.halt(reason, "risk", self._clock())
            if changed is not None:
                log.warning("risk HALT: %s", reason)
                await self._announce(changed)
            else:
                log.warning("risk limit breached while already HALTED: %s", reason)

    async def _announce(self, changed: TradingStateChangedEvent | None) -> None:
        if changed is None:
            return
        log.info(
            "trading state %s -> %s",
            changed.previous,
            changed.state,
            extra={
                "state": changed.state.value,
                "source": changed.source,
                "reason": changed.reason,
            },
        )
        await self._bus.publish(changed)


def _checks(verdict: RiskVerdict) -> tuple[tuple[str, bool, str], ...]:
    return tuple((c.name, c.passed, c.detail) for c in verdict.checks)
