"""StrategyArbitrator: entries on confirmed predictions with fee-aware brackets, exits on
stop, target, holding time and reversal; long-only on spot."""

from __future__ import annotations

from decimal import Decimal

from gal_friday.bus import EventBus
from gal_friday.config import FeeSettings, StrategySettings
from gal_friday.events import (
    BookEvent,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    OrderStatus,
    OrderType,
    PredictionEvent,
    Side,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
)
from gal_friday.strategy import StrategyArbitrator

PAIR = "XRP/USD"
MIN = 60_000_000_000


def book(bid: str, ask: str, t: int = 0) -> BookEvent:
    p = lambda x: int(Decimal(x).scaleb(5))  # noqa: E731
    return BookEvent(PAIR, ((p(bid), 10**9),), ((p(ask), 10**9),), 5, 8, 0, 1, False, "", t)


def features(roc: float, atr: float = 0.01) -> FeatureEvent:
    return FeatureEvent(PAIR, 0, ("roc_5_pct", "atr_14"), (roc, atr))


def prediction(p: float, t: int = 0) -> PredictionEvent:
    return PredictionEvent(PAIR, t, "m1", p, t, 1000)


def fill(signal_id: str, side: Side, qty: str, price: str, t: int = 0,
         status: OrderStatus = OrderStatus.FILLED) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        client_order_id=f"c-{signal_id}", exchange_order_id="O1", signal_id=signal_id, pair=PAIR,
        side=side, order_type=OrderType.LIMIT, status=status, order_qty=Decimal(qty),
        filled_qty=Decimal(qty), avg_price=Decimal(price), last_fill_qty=Decimal(qty),
        last_fill_price=Decimal(price), fee=Decimal("0.01"), fee_asset="USD", reason=None,
        ts_ns=t)


def strategy(*, venue_brackets: bool = True, **overrides: object) -> StrategyArbitrator:
    return StrategyArbitrator(StrategySettings(**overrides), FeeSettings(),  # type: ignore[arg-type]
                              EventBus(), venue_brackets=venue_brackets)


def entered(st: StrategyArbitrator) -> TradeSignalProposedEvent:
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    signal = st.handle(prediction(0.7))
    assert signal is not None
    st.handle(fill(signal.signal_id, Side.BUY, "100", "2.00000", t=0))
    return signal


def test_confirmed_prediction_proposes_a_limit_buy_at_the_bid_with_brackets() -> None:
    st = strategy()
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    signal = st.handle(prediction(0.7))
    assert signal is not None and not signal.is_exit
    assert (signal.side, signal.order_type, signal.entry_price) == (Side.BUY, OrderType.LIMIT,
                                                                    Decimal("2.00000"))
    assert signal.stop_loss == Decimal("1.99000")  # 0.5 % below
    assert signal.take_profit == Decimal("2.02000")  # 1.0 % above
    assert st.handle(prediction(0.9)) is None  # one entry in flight at a time


def test_thresholds_and_momentum_confirmation_gate_entries() -> None:
    st = strategy()
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    assert st.handle(prediction(0.65)) is None  # must be above, not at, the threshold
    st.handle(features(-0.1))
    assert st.handle(prediction(0.8)) is None
    assert st.skipped == {"no momentum confirmation": 1}


def test_no_short_on_spot_a_low_probability_without_position_does_nothing() -> None:
    st = strategy()
    st.handle(book("2.00000", "2.00010"))
    assert st.handle(prediction(0.1)) is None


def test_target_that_does_not_clear_round_trip_fees_is_skipped() -> None:
    st = strategy(take_profit_pct=Decimal("0.6"))  # fees 0.25 + 0.40 + edge 0.1 = 0.75 %
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    assert st.handle(prediction(0.8)) is None
    assert st.skipped == {"take-profit does not clear round-trip fees": 1}


def test_atr_brackets() -> None:
    st = strategy(stop_mode="atr")
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2, atr=0.01))
    signal = st.handle(prediction(0.8))
    assert signal is not None
    assert (signal.stop_loss, signal.take_profit) == (Decimal("1.98500"), Decimal("2.03000"))


def test_a_rejected_entry_frees_the_pair_for_the_next_signal() -> None:
    st = strategy()
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    first = st.handle(prediction(0.7))
    assert first is not None
    st.handle(TradeSignalRejectedEvent(first.signal_id, PAIR, "exposure", 0))
    assert st.handle(prediction(0.7)) is not None


def test_without_venue_brackets_the_strategy_exits_on_stop_target_and_holding_time() -> None:
    for bid, t, reason_price in (("1.98900", 0, "stop"), ("2.02100", 0, "target"),
                                 ("2.00500", 61 * MIN, "time")):
        st = strategy(venue_brackets=False)
        entry = entered(st)
        assert st.handle(book("2.00100", "2.00200", t=MIN)) is None  # nothing to do yet
        exit_signal = st.handle(book(bid, "2.03000", t=t or MIN))
        assert exit_signal is not None, reason_price
        assert exit_signal.is_exit and exit_signal.side is Side.SELL
        assert exit_signal.order_type is OrderType.MARKET
        assert exit_signal.stop_loss == entry.stop_loss


def test_with_venue_brackets_only_holding_time_exits_from_the_book() -> None:
    st = strategy()
    entered(st)
    assert st.handle(book("1.98900", "1.99000", t=MIN)) is None  # the venue's stop acts
    assert st.handle(book("2.02100", "2.03000", t=MIN)) is None  # the venue's target acts
    late = st.handle(book("2.00500", "2.03000", t=61 * MIN))
    assert late is not None and late.is_exit


def test_prediction_reversal_closes_the_position_once() -> None:
    st = strategy()
    entered(st)
    first = st.handle(prediction(0.2))
    assert first is not None and first.is_exit
    assert st.handle(prediction(0.1)) is None  # the exit is already in flight
    st.handle(fill(first.signal_id, Side.SELL, "100", "1.99500"))
    assert st.handle(prediction(0.1)) is None  # flat now: no short


def test_partial_entry_fills_average_the_entry() -> None:
    st = strategy()
    st.handle(book("2.00000", "2.00010"))
    st.handle(features(0.2))
    signal = st.handle(prediction(0.7))
    assert signal is not None
    st.handle(fill(signal.signal_id, Side.BUY, "40", "2.00000",
                   status=OrderStatus.PARTIALLY_FILLED))
    st.handle(fill(signal.signal_id, Side.BUY, "60", "2.00100"))
    state = st.pairs[PAIR]
    assert state.qty == 100 and state.avg_entry == Decimal("2.00060")


def test_flatten_exits_every_held_pair_at_market() -> None:
    st = strategy()
    entered(st)
    (signal,) = st.flatten(FlattenEvent("operator"))
    assert signal.is_exit and signal.order_type is OrderType.MARKET and signal.side is Side.SELL
    assert st.flatten(FlattenEvent("operator")) == []  # the exit is already pending
