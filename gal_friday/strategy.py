"""StrategyArbitrator: predictions become proposed trade signals with stop-loss and take-profit.

Spot and long-only: a probability above ``buy_threshold`` (optionally confirmed by positive
momentum) proposes a limit buy at the best bid (joining the bid, a maker order); a probability
below ``sell_threshold`` closes an open position (prediction reversal) but never opens a short.
Every entry carries a stop-loss and take-profit, as a percentage of the entry or as ATR
multiples, and is skipped when the take-profit would not clear the round-trip fees (maker
entry, taker exit) plus a minimum edge. Positions are closed when held longer than
``max_holding_min`` or on a prediction reversal. The stop and target themselves are orders at
the venue (the ExecutionHandler places them after every fill); only with
``venue_brackets=False`` does the strategy watch the book and exit at market on them.

The strategy only proposes; the RiskManager sizes and approves. It learns about its positions
from execution reports, never by reading another module's state.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from gal_friday.bus import EventBus, Policy
from gal_friday.config import FeeSettings, StrategySettings
from gal_friday.events import (
    BookEvent,
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    OrderType,
    PredictionEvent,
    ReconciliationEvent,
    Side,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
)

log = logging.getLogger(__name__)
_HUNDRED = Decimal(100)


class Intent(enum.StrEnum):
    ENTER = "enter"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class ProbabilityGate:
    """What a pair's next prediction must say for the strategy to act on it, as it stands:
    an entry needs ``prob > above``, an exit ``prob < below``; ``intent`` None means no
    prediction can make it act (an order in flight, or a position with reversal exits off).
    Necessary, not sufficient: an admitted entry may still be skipped (momentum, fees, no
    book). :meth:`StrategyArbitrator.handle` decides through this same gate, and the
    backtester's fast-forward asks it which candles can matter, so the two never differ."""

    intent: Intent | None
    above: float = math.inf
    below: float = -math.inf

    def admits(self, prob: float) -> bool:
        return prob > self.above or prob < self.below


NO_ACTION = ProbabilityGate(None)


@dataclass(frozen=True, slots=True)
class BookWatch:
    """Where the book must go for the strategy to act on a held position by itself: its bid
    at or below ``stop`` or at or above ``target`` (only when it watches its own brackets),
    or the book's time past ``deadline_ns`` (the maximum holding time)."""

    stop: Decimal | None = None
    target: Decimal | None = None
    deadline_ns: int | None = None


@dataclass
class PairState:
    bid: Decimal | None = None
    ask: Decimal | None = None
    price_precision: int = 8
    features: dict[str, float] | None = None
    qty: Decimal = Decimal(0)
    avg_entry: Decimal = Decimal(0)
    opened_ns: int = 0
    stop: Decimal = Decimal(0)
    target: Decimal = Decimal(0)
    pending: str | None = None  # signal id of an entry or exit still in flight


class StrategyArbitrator:
    """Per-pair trading rules; publishes TradeSignalProposedEvent."""

    def __init__(
        self,
        settings: StrategySettings,
        fees: FeeSettings,
        bus: EventBus,
        *,
        venue_brackets: bool = True,
        pairs: tuple[str, ...] = (),
    ) -> None:
        self.s = settings
        self.venue_brackets = venue_brackets
        self.fees = fees
        self.bus = bus
        self.pairs: dict[str, PairState] = {}
        self._ids = itertools.count(1)
        self._brackets: dict[str, tuple[Decimal, Decimal]] = {}  # signal id -> (stop, target)
        self.skipped: dict[str, int] = {}
        self._exit_ids: set[str] = set()  # exit signals still in flight
        # the gates and the holding limit depend only on the settings: built once, since the
        # backtester asks for them at every step
        self._entry_gate = ProbabilityGate(Intent.ENTER, above=settings.buy_threshold)
        self._exit_gate = (
            ProbabilityGate(Intent.EXIT, below=settings.sell_threshold)
            if settings.exit_on_reversal
            else NO_ACTION
        )
        self._hold_ns = int(settings.max_holding_min * 60 * 1_000_000_000)
        for pair in pairs:
            self._state(pair)

    def attach(self) -> None:
        self.bus.subscribe(
            (
                PredictionEvent,
                FeatureEvent,
                BookEvent,
                ExecutionReportEvent,
                TradeSignalRejectedEvent,
                FlattenEvent,
                ReconciliationEvent,
            ),
            self.on_event,
            name="strategy",
            policy=Policy.BLOCK,
            maxsize=4096,
        )

    async def start(self) -> None:
        """Nothing of its own to run: the strategy answers events."""

    async def stop(self) -> None:
        """Nothing to stop (see :meth:`start`)."""

    async def on_event(self, event: Event) -> None:
        if isinstance(event, FlattenEvent):
            for exit_signal in self.flatten(event):
                await self.bus.publish(exit_signal)
            return
        signal = self.handle(event)
        if signal is not None:
            await self.bus.publish(signal)

    def flatten(self, event: FlattenEvent) -> list[TradeSignalProposedEvent]:
        """An exit at market for every pair holding a position (an operator's order)."""
        signals = []
        for pair, state in self.pairs.items():
            exit_pending = state.pending is not None and state.pending in self._exit_ids
            if state.qty > 0 and state.bid is not None and not exit_pending:
                log.info("flatten requested", extra={"pair": pair, "operator": event.operator})
                signals.append(self._exit(pair, state, "flatten", event.ts_ns))
        return signals

    def handle(self, event: Event) -> TradeSignalProposedEvent | None:
        """Update state from one event; the signal to propose, if any."""
        if isinstance(event, BookEvent):
            return self._on_book(event)
        if isinstance(event, FeatureEvent):
            self._state(event.pair).features = dict(zip(event.names, event.values, strict=True))
        elif isinstance(event, PredictionEvent):
            return self._on_prediction(event)
        elif isinstance(event, ExecutionReportEvent):
            self._on_report(event)
        elif isinstance(event, ReconciliationEvent):
            self._on_reconciliation(event)
        elif isinstance(event, TradeSignalRejectedEvent):
            state = self._state(event.pair)
            if state.pending == event.signal_id:
                state.pending = None
                self._exit_ids.discard(event.signal_id)
        return None

    def _state(self, pair: str) -> PairState:
        return self.pairs.setdefault(pair, PairState())

    # --- entries -------------------------------------------------------------------------

    def gate(self, pair: str) -> ProbabilityGate:
        """The probabilities on which the strategy would act for ``pair`` now (see
        :class:`ProbabilityGate`): nothing while an entry or exit is in flight, a reversal
        exit while a position is held, an entry while flat."""
        state = self.pairs.get(pair)
        if state is not None and state.pending is not None:
            return NO_ACTION
        if state is not None and state.qty > 0:
            return self._exit_gate
        return self._entry_gate

    def book_watch(self, pair: str) -> BookWatch | None:
        """Where the book must go for :meth:`handle` of a BookEvent to exit ``pair`` by
        itself; None when no book can (flat)."""
        state = self.pairs.get(pair)
        if state is None or state.qty <= 0:
            return None
        deadline = state.opened_ns + self._hold_ns + 1 if self._hold_ns else None
        if self.venue_brackets:  # the venue holds the stop and target orders
            return BookWatch(deadline_ns=deadline)
        return BookWatch(state.stop, state.target, deadline)

    def _on_prediction(self, pred: PredictionEvent) -> TradeSignalProposedEvent | None:
        gate = self.gate(pred.pair)
        state = self._state(pred.pair)
        if not gate.admits(pred.prob_up) or state.bid is None:
            return None
        if gate.intent is Intent.EXIT:
            return self._exit(
                pred.pair, state, "prediction reversal", pred.ts_ns, pred.prob_up, pred.model_id
            )
        return self._enter(pred, state)

    def _enter(self, pred: PredictionEvent, state: PairState) -> TradeSignalProposedEvent | None:
        """A limit buy joining the bid, when confirmed and worth its fees."""
        assert state.bid is not None
        if self.s.confirm_momentum and not self._momentum_up(state):
            self._skip("no momentum confirmation")
            return None
        entry = state.bid
        bracket = self._bracket(state, entry)
        if bracket is None:
            self._skip(f"{self.s.atr_feature} unavailable for an ATR stop")
            return None
        stop, target = bracket
        edge_pct = (target - entry) / entry * _HUNDRED
        costs = self.fees.maker_pct + self.fees.taker_pct + self.s.min_edge_pct
        if edge_pct <= costs:
            self._skip("take-profit does not clear round-trip fees")
            return None
        return self._propose_entry(pred, state, OrderType.LIMIT, entry, stop, target)

    def _propose_entry(
        self,
        pred: PredictionEvent,
        state: PairState,
        order_type: OrderType,
        entry: Decimal,
        stop: Decimal,
        target: Decimal,
    ) -> TradeSignalProposedEvent:
        signal = self._signal(
            pred.pair,
            Side.BUY,
            order_type,
            entry,
            stop,
            target,
            pred.prob_up,
            pred.model_id,
            pred.ts_ns,
            is_exit=False,
        )
        self._brackets[signal.signal_id] = (stop, target)
        state.pending = signal.signal_id
        return signal

    def _momentum_up(self, state: PairState) -> bool:
        value = (state.features or {}).get(self.s.momentum_feature)
        return value is not None and value > 0

    def _bracket(self, state: PairState, entry: Decimal) -> tuple[Decimal, Decimal] | None:
        """Stop and target for a long entry at ``entry``, at the pair's price precision."""
        if self.s.stop_mode == "atr":
            atr = (state.features or {}).get(self.s.atr_feature)
            if atr is None or not atr > 0:
                return None
            atr_d = Decimal(repr(atr))
            stop = entry - atr_d * self.s.atr_stop_mult
            target = entry + atr_d * self.s.atr_take_profit_mult
        else:
            stop = entry * (1 - self.s.stop_loss_pct / _HUNDRED)
            target = entry * (1 + self.s.take_profit_pct / _HUNDRED)
        quantum = Decimal(1).scaleb(-state.price_precision)
        return (stop.quantize(quantum, ROUND_HALF_EVEN), target.quantize(quantum, ROUND_HALF_EVEN))

    def _skip(self, reason: str) -> None:
        """Count why an entry was not proposed (visible in monitoring and tests)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        log.debug("entry skipped", extra={"reason": reason})

    # --- exits ---------------------------------------------------------------------------

    def _on_book(self, book: BookEvent) -> TradeSignalProposedEvent | None:
        state = self._state(book.pair)
        state.bid, state.ask = book.best_bid(), book.best_ask()
        state.price_precision = book.price_precision
        if state.qty <= 0 or state.pending is not None or state.bid is None:
            return None
        now = book.received_ts_ns
        if not self.venue_brackets:  # otherwise the venue holds the stop and target orders
            if state.bid <= state.stop:
                return self._exit(book.pair, state, "stop-loss", now)
            if state.bid >= state.target:
                return self._exit(book.pair, state, "take-profit", now)
        held_min = (now - state.opened_ns) / 60e9
        if self.s.max_holding_min and held_min > self.s.max_holding_min:
            return self._exit(book.pair, state, "max holding time", now)
        return None

    def _exit(
        self,
        pair: str,
        state: PairState,
        reason: str,
        ts_ns: int,
        prob_up: float = float("nan"),
        model_id: str = "",
    ) -> TradeSignalProposedEvent:
        assert state.bid is not None
        signal = self._signal(
            pair,
            Side.SELL,
            OrderType.MARKET,
            state.bid,
            state.stop,
            state.target,
            prob_up,
            model_id or reason,
            ts_ns,
            is_exit=True,
        )
        state.pending = signal.signal_id
        self._exit_ids.add(signal.signal_id)
        log.info(
            "exit proposed", extra={"pair": pair, "reason": reason, "signal_id": signal.signal_id}
        )
        return signal

    def _signal(
        self,
        pair: str,
        side: Side,
        order_type: OrderType,
        price: Decimal,
        stop: Decimal,
        target: Decimal,
        prob: float,
        model_id: str,
        ts_ns: int,
        *,
        is_exit: bool,
    ) -> TradeSignalProposedEvent:
        signal_id = f"sig-{pair.replace('/', '')}-{ts_ns}-{next(self._ids)}"
        return TradeSignalProposedEvent(
            signal_id=signal_id,
            pair=pair,
            side=side,
            order_type=order_type,
            entry_price=price,
            stop_loss=stop,
            take_profit=target,
            prob_up=prob,
            model_id=model_id,
            ts_ns=ts_ns,
            is_exit=is_exit,
        )

    # --- positions from execution reports --------------------------------------------------

    def _on_reconciliation(self, event: ReconciliationEvent) -> None:
        """The exchange's holdings win (after a restart the strategy knows nothing else)."""
        balances = dict(event.balances)
        for pair, state in self.pairs.items():
            held = balances.get(pair.split("/")[0], Decimal(0))
            if held == state.qty:
                continue
            log.warning(
                "position corrected to the exchange's balance",
                extra={"pair": pair, "was": str(state.qty), "now": str(held)},
            )
            if state.qty == 0 and held > 0:
                state.opened_ns = event.ts_ns
            state.qty = held

    def _on_report(self, report: ExecutionReportEvent) -> None:
        state = self._state(report.pair)
        fill_qty, fill_px = report.last_fill_qty, report.last_fill_price
        if fill_qty and fill_px is not None and fill_qty > 0:
            if report.side is Side.BUY:
                if state.qty == 0:
                    state.opened_ns = report.ts_ns
                    bracket = self._brackets.get(report.signal_id or "")
                    if bracket is not None:
                        state.stop, state.target = bracket
                total = state.qty + fill_qty
                state.avg_entry = (state.avg_entry * state.qty + fill_px * fill_qty) / total
                state.qty = total
            else:
                state.qty = max(Decimal(0), state.qty - fill_qty)
                if state.qty == 0:
                    state.avg_entry = Decimal(0)
        protective = report.order_type in (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
        if report.status.is_terminal and state.pending == report.signal_id and not protective:
            state.pending = None
            self._exit_ids.discard(report.signal_id or "")
            if state.qty == 0:
                self._brackets.pop(report.signal_id or "", None)
