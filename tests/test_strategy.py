"""StrategyArbitrator: entries on confirmed predictions with fee-aware brackets, exits on
stop, target, holding time and reversal; long-only on spot."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

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
from gal_friday.strategy import BookWatch, Intent, StrategyArbitrator

PAIR = "XRP/USD"
MIN = 60_000_000_000


def book(bid: str, ask: str, t: int = 0) -> BookEvent:
    p = lambda x: int(Decimal(x).scaleb(5))  # noqa: E731
    return BookEvent(PAIR, ((p(bid), 10**9),), ((p(ask), 10**9),), 5, 8, 0, 1, False, "", t)


def features(roc: float, atr: float = 0.01) -> FeatureEvent:
    return FeatureEvent(PAIR, 0, ("roc_5_pct", "atr_14"), (roc, atr))


def prediction(p: float, t: int = 0) -> PredictionEvent:
    return PredictionEvent(PAIR, t, "m1", p, t, 1000)


def fill(
    signal_id: str,
    side: Side,
    qty: str,
    price: str,
    t: int = 0,
    status: OrderStatus = OrderStatus.FILLED,
) -> ExecutionReportEvent:
    return ExecutionReportEvent(
        client_order_id=f"c-{signal_id}",
        exchange_order_id="O1",
        signal_id=signal_id,
        pair=PAIR,
        side=side,
        order_type=OrderType.LIMIT,
        status=status,
        order_qty=Decimal(qty),
        filled_qty=Decimal(qty),
        avg_price=Decimal(price),
        last_fill_qty=Decimal(qty),
        last_fill_price=Decimal(price),
        fee=Decimal("0.01"),
        fee_asset="USD",
        reason=None,
        ts_ns=t,
    )


def strategy(*, venue_brackets: bool = True, **overrides: object) -> StrategyArbitrator:
    return StrategyArbitrator(
        StrategySettings(**overrides),
        FeeSettings(),  # type: ignore[arg-type]
        EventBus(),
        venue_brackets=venue_brackets,
    )


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
    assert (signal.side, signal.order_type, signal.entry_price) == (
        Side.BUY,
        OrderType.LIMIT,
        Decimal("2.00000"),
    )
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
    for bid, t, reason_price in (
        ("1.98900", 0, "stop"),
        ("2.02100", 0, "target"),
        ("2.00500", 61 * MIN, "time"),
    ):
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
    st.handle(
        fill(signal.signal_id, Side.BUY, "40", "2.00000", status=OrderStatus.PARTIALLY_FILLED)
    )
    st.handle(fill(signal.signal_id, Side.BUY, "60", "2.00100"))
    state = st.pairs[PAIR]
    assert state.qty == 100 and state.avg_entry == Decimal("2.00060")


def test_flatten_exits_every_held_pair_at_market() -> None:
    st = strategy()
    entered(st)
    (signal,) = st.flatten(FlattenEvent("operator"))
    assert signal.is_exit and signal.order_type is OrderType.MARKET and signal.side is Side.SELL
    assert st.flatten(FlattenEvent("operator")) == []  # the exit is already pending


# --- the gate the backtester asks ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["prediction", "fill", "exit-fill", "rejected", "book"]),
            st.floats(0, 1),
        ),
        max_size=12,
    ),
    st.floats(0.51, 0.9),
    st.floats(0.1, 0.49),
    st.booleans(),
    st.booleans(),
)
def test_no_prediction_the_gate_refuses_ever_makes_a_signal(
    steps: list[tuple[str, float]], buy: float, sell: float, reversal: bool, brackets: bool
) -> None:
    """Whatever state the strategy is in (flat, entering, holding, exiting), a prediction
    its ``gate`` refuses proposes nothing and changes nothing; one it proposes on matches
    the gate's intent. The backtester skips every candle the gate refuses."""
    s = strategy(
        venue_brackets=brackets,
        buy_threshold=buy,
        sell_threshold=sell,
        exit_on_reversal=reversal,
        confirm_momentum=False,
    )
    s.handle(book("2.00000", "2.00010"))
    s.handle(features(0.2))
    last: TradeSignalProposedEvent | None = None
    for t, (kind, p) in enumerate(steps, start=1):
        if kind == "prediction":
            gate = s.gate(PAIR)
            before = repr(s.pairs[PAIR])
            signal = s.handle(prediction(p, t))
            if not gate.admits(p):
                assert signal is None and repr(s.pairs[PAIR]) == before
            elif signal is not None:
                assert signal.is_exit == (gate.intent is Intent.EXIT)
                last = signal
        elif kind == "fill" and last is not None and not last.is_exit:
            s.handle(fill(last.signal_id, Side.BUY, "10", "2.00000", t))
        elif kind == "exit-fill" and last is not None and last.is_exit:
            s.handle(fill(last.signal_id, Side.SELL, "10", "2.00000", t))
        elif kind == "rejected" and last is not None:
            s.handle(TradeSignalRejectedEvent(last.signal_id, PAIR, "halt", t))
        elif kind == "book":
            s.handle(book("2.00000", "2.00010", t))


def test_the_book_watch_names_the_brackets_only_when_the_strategy_watches_them() -> None:
    own = strategy(venue_brackets=False, max_holding_min=60)
    assert own.book_watch(PAIR) is None  # flat: no book can make it exit
    signal = entered(own)
    own.handle(fill(signal.signal_id, Side.BUY, "10", "2.00000", t=5))
    watch = own.book_watch(PAIR)
    assert watch is not None and (watch.stop, watch.target) == (
        signal.stop_loss,
        signal.take_profit,
    )
    assert watch.deadline_ns == own.pairs[PAIR].opened_ns + 60 * MIN + 1
    venue = strategy(venue_brackets=True, max_holding_min=0)
    signal = entered(venue)
    venue.handle(fill(signal.signal_id, Side.BUY, "10", "2.00000"))
    assert venue.book_watch(PAIR) == BookWatch()  # the venue holds them; no holding limit
