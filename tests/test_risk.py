"""RiskManager: each pre-trade check, sizing arithmetic, rounding, HALT triggers, bus round trip."""

from __future__ import annotations

import logging
import random
from decimal import Decimal
from typing import TypeVar

import msgspec
import pytest

from gal_friday.bus import EventBus
from gal_friday.config import RiskSettings
from gal_friday.domain import InstrumentSpec, PortfolioSnapshot, Position
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    Event,
    HaltEvent,
    InstrumentEvent,
    OrderType,
    ReduceEvent,
    ResumeEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.risk import (
    RiskManager,
    RiskVerdict,
    check_signal,
    evaluate_halt,
    round_price,
    round_qty,
)

D = Decimal
PAIR = "XRP/USD"
FEE = D("0.4")
SPEC = InstrumentSpec(PAIR, 4, 2, D("0.0001"), D("0.01"), D("10"), D("5"))
E = TypeVar("E", bound=Event)
SETTINGS = RiskSettings()  # 0.5 % risk, 10 % asset, 25 % total, $10k order, 5 % fat finger


def portfolio(
    *,
    cash: str = "10000",
    free: str | None = None,
    positions: tuple[Position, ...] = (),
    peak: str | None = None,
    day: str | None = None,
    week: str | None = None,
    losses: int = 0,
) -> PortfolioSnapshot:
    c = D(cash)
    equity = c + sum((p.value for p in positions), D(0))
    return PortfolioSnapshot(
        ts_ns=0,
        cash=c,
        free_cash=D(free) if free is not None else c,
        positions=positions,
        equity=equity,
        peak_equity=D(peak) if peak is not None else equity,
        day_start_equity=D(day) if day is not None else equity,
        week_start_equity=D(week) if week is not None else equity,
        realised_pnl=D(0),
        fees_paid=D(0),
        consecutive_losses=losses,
    )


def pos(pair: str, qty: str, mark: str = "0.5") -> Position:
    return Position(pair, D(qty), D(mark), D(mark), 0)


def signal(
    entry: str = "0.5",
    stop: str = "0.45",
    side: Side = Side.BUY,
    *,
    is_exit: bool = False,
    order_type: OrderType = OrderType.LIMIT,
    sid: str = "s1",
) -> TradeSignalProposedEvent:
    return TradeSignalProposedEvent(
        sid,
        PAIR,
        side,
        order_type,
        D(entry),
        D(stop),
        D("0.6"),
        0.7,
        "m",
        0,
        is_exit,
    )


def check(
    sig: TradeSignalProposedEvent | None = None,
    pf: PortfolioSnapshot | None = None,
    *,
    spec: InstrumentSpec | None = SPEC,
    market: str | None = "0.5",
    halted: bool = False,
    settings: RiskSettings = SETTINGS,
    fee: Decimal = FEE,
) -> RiskVerdict:
    return check_signal(
        sig or signal(),
        pf or portfolio(),
        spec,
        D(market) if market is not None else None,
        halted,
        settings=settings,
        fee_pct=fee,
    )


def failed(v: RiskVerdict) -> str:
    assert not v.approved
    assert v.reason is not None
    last = v.checks[-1]
    assert not last.passed and v.reason == f"{last.name}: {last.detail}"
    assert all(c.passed for c in v.checks[:-1])
    return last.name


def passed_names(v: RiskVerdict) -> list[str]:
    return [c.name for c in v.checks if c.passed]


# --- sizing ---------------------------------------------------------------------------------


def test_fixed_fractional_sizing_hand_computed() -> None:
    # risk 10000 * 0.5 % = 50 USD; stop distance 0.5 - 0.45 = 0.05 -> 1000 XRP (500 USD)
    v = check()
    assert v.approved and v.reason is None
    assert v.qty == D("1000") and v.limit_price == D("0.5")
    assert passed_names(v) == [
        "halt",
        "risk_limits",
        "instrument",
        "market_price",
        "price_tick",
        "stop_side",
        "fat_finger",
        "sizing",
        "max_order_value",
        "asset_exposure",
        "total_exposure",
        "free_balance",
        "lot_size",
        "min_qty",
        "min_cost",
    ]


def test_sizing_rounds_qty_down_to_lot() -> None:
    # 50 / 0.0433 = 1154.7344... -> 1154.73 (lot 0.01, always down)
    v = check(signal(stop="0.4567"))
    assert v.approved and v.qty == D("1154.73")
    assert v.qty * (D("0.5") - D("0.4567")) <= D(50)


def test_price_rounds_to_tick_buy_down_sell_up() -> None:
    assert round_price(D("0.50009"), D("0.0001"), Side.BUY) == D("0.5000")
    assert round_price(D("0.50001"), D("0.0001"), Side.SELL) == D("0.5001")
    assert round_price(D("0.5"), D("0.0001"), Side.SELL) == D("0.5")
    assert round_qty(D("1.999"), D("0.01")) == D("1.99")
    v = check(signal(entry="0.50009"))
    assert v.approved and v.limit_price == D("0.5000")


# --- each check fails with its reason --------------------------------------------------------


def test_halted_blocks_entries() -> None:
    v = check(halted=True)
    assert failed(v) == "halt" and "HALTED" in (v.reason or "")


def test_breached_limits_block_entries_even_before_halt() -> None:
    v = check(pf=portfolio(cash="9700", day="10000"))  # 3 % daily drawdown, limit 2 %
    assert failed(v) == "risk_limits" and "daily drawdown" in (v.reason or "")


def test_missing_or_offline_instrument_fails_closed() -> None:
    assert failed(check(spec=None)) == "instrument"
    offline = InstrumentSpec(PAIR, 4, 2, D("0.0001"), D("0.01"), D("10"), D("5"), "cancel_only")
    v = check(spec=offline)
    assert failed(v) == "instrument" and "cancel_only" in (v.reason or "")


def test_missing_market_price_fails_closed() -> None:
    assert failed(check(market=None)) == "market_price"


def test_stop_on_wrong_side_rejected() -> None:
    v = check(signal(stop="0.51"))
    assert failed(v) == "stop_side" and "below" in (v.reason or "")
    assert failed(check(signal(stop="0.5"))) == "stop_side"  # zero distance
    held = portfolio(cash="9000", positions=(pos(PAIR, "2000"),))
    v = check(signal(side=Side.SELL, stop="0.49"), held)
    assert failed(v) == "stop_side" and "above" in (v.reason or "")


def test_stop_inside_one_tick_rejected_after_rounding() -> None:
    # entry 0.50009 rounds down to 0.5000; a stop at 0.50005 is then above the entry
    assert failed(check(signal(entry="0.50009", stop="0.50005"))) == "stop_side"


def test_fat_finger() -> None:
    v = check(signal(entry="0.53", stop="0.5"))  # 6 % above market 0.5
    assert failed(v) == "fat_finger" and "6.00%" in (v.reason or "")
    assert check(signal(entry="0.525", stop="0.5")).approved  # exactly 5 %: allowed
    assert failed(check(signal(entry="0.47", stop="0.45"))) == "fat_finger"  # 6 % below


def test_non_positive_equity_rejected_at_sizing() -> None:
    pf = portfolio(cash="0", peak="0", day="0", week="0")
    assert failed(check(pf=pf)) == "sizing"


def test_max_order_value_shrinks_then_minimum_checked() -> None:
    small = RiskSettings(max_order_value_usd=D("100"))
    v = check(settings=small)  # 1000 XRP = 500 USD -> 200 XRP = 100 USD
    assert v.approved and v.qty == D("200")
    assert any(c.name == "max_order_value" and "shrunk" in c.detail for c in v.checks)
    tiny = RiskSettings(max_order_value_usd=D("4"))  # 8 XRP < qty_min 10
    v = check(settings=tiny)
    assert failed(v) == "min_qty" and "below exchange minimum 10" in (v.reason or "")


def test_asset_exposure_shrinks_or_rejects() -> None:
    # stop 0.49: 50 / 0.01 = 5000 XRP = 2500 USD; asset cap 10 % of 10000 = 1000 USD
    v = check(signal(stop="0.49"))
    assert v.approved and v.qty == D("2000")
    # already holding 1100 USD of XRP (equity 10000): no room
    held = portfolio(cash="8900", positions=(pos(PAIR, "2200"),))
    v = check(signal(stop="0.49"), held)
    assert failed(v) == "asset_exposure" and "no room" in (v.reason or "")
    # holding 800 USD: room 200 USD -> 400 XRP
    part = portfolio(cash="9200", positions=(pos(PAIR, "1600"),))
    assert check(signal(stop="0.49"), part).qty == D("400")


def test_total_exposure_shrinks_or_rejects() -> None:
    # DOGE 2000 USD of equity 10000; total cap 2500 -> room 500 USD = 1000 XRP
    doge = portfolio(cash="8000", positions=(pos("DOGE/USD", "20000", "0.1"),))
    v = check(signal(stop="0.49"), doge)
    assert v.approved and v.qty == D("1000")
    assert any(c.name == "total_exposure" and "shrunk" in c.detail for c in v.checks)
    full = portfolio(cash="7500", positions=(pos("DOGE/USD", "25000", "0.1"),))
    assert failed(check(signal(stop="0.49"), full)) == "total_exposure"


def test_free_balance_includes_taker_fee() -> None:
    # 100 / (0.5 * 1.004) = 199.2031... -> 199.20 XRP; 99.60 + 0.3984 fee <= 100
    v = check(pf=portfolio(free="100"))
    assert v.approved and v.qty == D("199.20")
    assert v.qty * D("0.5") * (1 + FEE / 100) <= D(100)
    v = check(pf=portfolio(free="0"))
    assert failed(v) == "free_balance" and "no room" in (v.reason or "")
    assert failed(check(pf=portfolio(free="4"))) == "min_qty"  # 7.96 XRP < 10


def test_sell_entry_needs_a_position() -> None:
    v = check(signal(side=Side.SELL, stop="0.55"))
    assert failed(v) == "position_held" and "cannot open a short" in (v.reason or "")
    held = portfolio(cash="9850", positions=(pos(PAIR, "300"),))
    v = check(signal(side=Side.SELL, stop="0.55"), held)  # sized 1000, holding 300
    assert v.approved and v.qty == D("300") and v.limit_price == D("0.5")


def test_minimum_cost_rejected() -> None:
    spec = InstrumentSpec(PAIR, 4, 2, D("0.0001"), D("0.01"), D("10"), D("600"))
    v = check(spec=spec)  # 500 USD < 600
    assert failed(v) == "min_cost" and "600" in (v.reason or "")


# --- exits ------------------------------------------------------------------------------------


def test_exit_allowed_while_halted_and_rounded() -> None:
    held = portfolio(cash="9000", positions=(pos(PAIR, "123.456"),))
    v = check(
        signal(entry="0.50001", stop="0.45", side=Side.SELL, is_exit=True),
        held,
        halted=True,
        market=None,
    )
    assert v.approved
    assert v.qty == D("123.45") and v.limit_price == D("0.5001")
    assert v.checks[0].detail == "exit allowed while halted"


def test_exit_checks_position_and_minimums() -> None:
    sell_exit = signal(side=Side.SELL, is_exit=True)
    v = check(sell_exit)
    assert failed(v) == "position_held" and "no XRP/USD position" in (v.reason or "")
    dust = portfolio(cash="9000", positions=(pos(PAIR, "9.999"),))
    assert failed(check(sell_exit, dust, halted=True)) == "min_qty"
    held = portfolio(cash="9000", positions=(pos(PAIR, "100"),))
    assert failed(check(signal(side=Side.BUY, is_exit=True), held)) == "position_held"
    assert failed(check(sell_exit, held, spec=None)) == "instrument"


# --- rounding never exceeds limits -------------------------------------------------------------


def test_rounding_never_exceeds_limits() -> None:
    rng = random.Random(7)
    settings = RiskSettings(max_order_value_usd=D("700"), risk_per_trade_pct=D("1"))
    for _ in range(500):
        market = D(rng.randint(1000, 99999)) / D(100000)
        tick = D("0.00001") * rng.choice([1, 10, 100])
        lot = D("0.00000001") * rng.choice([1, 10**4, 10**6, 10**8])
        spec = InstrumentSpec(PAIR, 5, 8, tick, lot, D("0.0001"), D("0.5"))
        entry = market * (1 + D(rng.randint(-400, 400)) / D(10000))
        stop = entry * (1 - D(rng.randint(10, 500)) / D(10000))
        held_qty = D(rng.randint(0, 3000))
        pf = portfolio(
            cash=str(rng.randint(500, 20000)),
            free=str(rng.randint(0, 20000)),
            positions=(pos(PAIR, str(held_qty), str(market)),),
        )
        v = check_signal(
            signal(str(entry), str(stop)), pf, spec, market, False, settings=settings, fee_pct=FEE
        )
        if not v.approved:
            continue
        price, qty = v.limit_price, v.qty
        assert price is not None
        assert price <= entry and price % tick == 0 and qty % lot == 0
        notional = qty * price
        assert notional <= settings.max_order_value_usd
        assert pf.equity * settings.risk_per_trade_pct / 100 >= qty * (price - stop)
        held = pf.positions[0].value
        assert held + notional <= pf.equity * settings.max_asset_exposure_pct / 100
        assert pf.exposure + notional <= pf.equity * settings.max_total_exposure_pct / 100
        assert notional * (1 + FEE / 100) <= pf.free_cash
        assert qty >= spec.qty_min and notional >= spec.cost_min


# --- HALT triggers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cash": "8400", "peak": "10000", "day": "8400", "week": "8400"}, "total drawdown"),
        ({"cash": "9800", "day": "10000"}, "daily drawdown"),
        ({"cash": "9500", "week": "10000"}, "weekly drawdown"),
        ({"losses": 5}, "consecutive losses 5 >= limit 5"),
    ],
)
def test_evaluate_halt_triggers(kwargs: dict[str, object], expected: str) -> None:
    reason = evaluate_halt(portfolio(**kwargs), SETTINGS)  # type: ignore[arg-type]
    assert reason is not None and expected in reason


def test_evaluate_halt_within_limits() -> None:
    assert evaluate_halt(portfolio(cash="9810", day="10000", losses=4), SETTINGS) is None


# --- bus ---------------------------------------------------------------------------------------


def book(pair: str = PAIR, bid: int = 4999, ask: int = 5001) -> BookEvent:
    return BookEvent(pair, ((bid, 100),), ((ask, 100),), 4, 0, 0, 1, True, "", 0)


class Harness:
    def __init__(self, pf: PortfolioSnapshot) -> None:
        self.pf = pf
        self.bus = EventBus()
        self.out: list[Event] = []
        self.bus.subscribe(
            (
                TradeSignalApprovedEvent,
                TradeSignalRejectedEvent,
                HaltEvent,
                TradingStateChangedEvent,
            ),
            self.out.append,
            name="sink",
        )
        self.risk = RiskManager(
            SETTINGS, self.bus, self.snapshot, taker_fee_pct=FEE, clock=lambda: 42
        )
        self.risk.attach()

    def halts(self) -> list[TradingStateChangedEvent]:
        return [e for e in self.of(TradingStateChangedEvent) if e.halted]

    def snapshot(self) -> PortfolioSnapshot:
        return self.pf

    async def send(self, *events: Event) -> None:
        for event in events:
            await self.bus.publish(event)
            await self.bus.drain()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.out if isinstance(e, kind)]


async def test_bus_round_trip_approves_with_rules_and_mid() -> None:
    h = Harness(portfolio())
    h.bus.start()
    await h.send(signal(sid="early"))  # no rules, no price yet: fail closed
    await h.send(InstrumentEvent(PAIR, SPEC), signal(sid="no-book"))
    await h.send(book(), signal(sid="ok"), signal(sid="mkt", order_type=OrderType.MARKET))
    await h.send(BookInvalidatedEvent(PAIR, "checksum"), signal(sid="stale"))
    await h.bus.stop()
    rejected = h.of(TradeSignalRejectedEvent)
    approved = h.of(TradeSignalApprovedEvent)
    assert [(e.signal_id, e.reason.split(":")[0]) for e in rejected] == [
        ("early", "instrument"),
        ("no-book", "market_price"),
        ("stale", "market_price"),
    ]
    assert h.risk.market_prices == {}
    assert [msgspec.structs.replace(e, checks=()) for e in approved] == [
        TradeSignalApprovedEvent(
            "ok", PAIR, Side.BUY, OrderType.LIMIT, D("1000"), D("0.5"), D("0.45"), D("0.6"), 42
        ),
        TradeSignalApprovedEvent(
            "mkt", PAIR, Side.BUY, OrderType.MARKET, D("1000"), None, D("0.45"), D("0.6"), 42
        ),
    ]
    assert all(passed for e in approved for _, passed, _ in e.checks)
    assert {name for name, _, _ in approved[0].checks} >= {"halt", "sizing", "fat_finger"}
    assert rejected[0].checks[-1][:2] == ("instrument", False)
    assert (h.risk.approved, h.risk.rejected) == (2, 3)
    assert not h.of(HaltEvent)


async def test_bus_halt_blocks_entries_allows_exits_and_resume() -> None:
    h = Harness(portfolio(cash="9000", positions=(pos(PAIR, "100"),)))
    h.bus.start()
    await h.send(InstrumentEvent(PAIR, SPEC), book(), HaltEvent("operator says", "operator"))
    await h.send(signal(sid="entry"), signal(side=Side.SELL, is_exit=True, sid="exit"))
    await h.send(ResumeEvent("op"), signal(sid="again"))
    await h.bus.stop()
    assert [e.signal_id for e in h.of(TradeSignalRejectedEvent)] == ["entry"]
    exits = h.of(TradeSignalApprovedEvent)
    assert [(e.signal_id, e.qty, e.is_exit) for e in exits] == [
        ("exit", D("100"), True),
        ("again", D("905"), False),
    ]  # equity 9050 * 0.5 % / 0.05


async def test_bus_breach_halts_once_per_breach(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(portfolio())
    h.bus.start()
    await h.send(InstrumentEvent(PAIR, SPEC), book(), signal(sid="a"))
    assert not h.halts()
    h.pf = portfolio(losses=5)
    await h.send(signal(sid="b"), signal(sid="c"))  # breached: HALT once, not twice
    halts = h.halts()
    assert len(halts) == 1 and halts[0].source == "risk"
    assert "consecutive losses" in halts[0].reason and halts[0].previous is TradingState.ACTIVE
    assert h.risk.halted and h.risk.state is TradingState.HALTED
    # a second, different breach while HALTED: said in the log, the first reason stands
    h.pf = portfolio(cash="9700", day="10000", losses=5)
    with caplog.at_level(logging.WARNING, "gal_friday.risk"):
        await h.send(signal(sid="d"), signal(sid="e"))
    assert len(h.halts()) == 1
    assert any(
        "daily drawdown" in r.getMessage() and "already HALTED" in r.getMessage()
        for r in caplog.records
    )
    # operator resumes; limits recover, then breach again -> a new HALT
    h.pf = portfolio()
    await h.send(ResumeEvent("op"), signal(sid="f"))
    h.pf = portfolio(losses=6)
    await h.send(signal(sid="g"))
    await h.bus.stop()
    states = [e.state for e in h.of(TradingStateChangedEvent)]
    assert states == [TradingState.HALTED, TradingState.ACTIVE, TradingState.HALTED]
    assert [e.signal_id for e in h.of(TradeSignalApprovedEvent)] == ["a", "f"]
    assert not h.of(HaltEvent)  # the owner announces a state; it does not send commands


async def test_bus_portfolio_failure_rejects() -> None:
    h = Harness(portfolio())

    def broken() -> PortfolioSnapshot:
        raise RuntimeError("boom")

    h.risk._portfolio = broken
    h.bus.start()
    await h.send(InstrumentEvent(PAIR, SPEC), book(), signal())
    await h.bus.stop()
    [rejected] = h.of(TradeSignalRejectedEvent)
    assert rejected.reason.startswith("portfolio")


# --- REDUCING ----------------------------------------------------------------------------------


def test_reducing_blocks_entries_but_not_exits() -> None:
    held = portfolio(cash="9000", positions=(pos(PAIR, "100"),))
    v = check_signal(
        signal(),
        held,
        SPEC,
        D("0.5"),
        False,
        settings=SETTINGS,
        fee_pct=FEE,
        reducing="operator: winding down",
    )
    assert failed(v) == "reducing"
    assert v.reason == (
        "reducing: trading is REDUCING (operator: winding down): exits only, no new entries"
    )
    sell = check_signal(
        signal(side=Side.SELL, stop="0.55"),
        held,
        SPEC,
        D("0.5"),
        False,
        settings=SETTINGS,
        fee_pct=FEE,
        reducing="x",
    )
    assert failed(sell) == "reducing"  # a sell entry is still an entry
    exit_ = check_signal(
        signal(side=Side.SELL, is_exit=True),
        held,
        SPEC,
        D("0.5"),
        False,
        settings=SETTINGS,
        fee_pct=FEE,
        reducing="x",
    )
    assert exit_.approved and exit_.qty == D("100")
    halted = check_signal(
        signal(), held, SPEC, D("0.5"), True, settings=SETTINGS, fee_pct=FEE, reducing="x"
    )
    assert failed(halted) == "halt"  # HALT wins over REDUCING


async def test_bus_reducing_until_resume() -> None:
    h = Harness(portfolio(cash="9000", positions=(pos(PAIR, "100"),)))
    h.bus.start()
    await h.send(InstrumentEvent(PAIR, SPEC), book(), ReduceEvent("vol spike", "monitoring"))
    await h.send(signal(sid="entry"), signal(side=Side.SELL, is_exit=True, sid="exit"))
    assert h.risk.reducing == "monitoring: vol spike" and not h.risk.halted
    await h.send(ResumeEvent("op"), signal(sid="again"))
    await h.bus.stop()
    [rejected] = h.of(TradeSignalRejectedEvent)
    assert rejected.signal_id == "entry" and rejected.reason.startswith("reducing: ")
    assert "vol spike" in rejected.reason
    assert [e.signal_id for e in h.of(TradeSignalApprovedEvent)] == ["exit", "again"]
    assert h.risk.reducing is None and not h.of(HaltEvent)
