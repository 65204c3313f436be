"""Turns bus events into audit rows: pure, in-memory, no I/O.

Kept apart from the writer so the derivations (round trips, P&L, daily figures) are computed
once, in event order, at the moment an event arrives. The rows are then final: whether they
reach the database now or later from the spill file, they are the same rows, which is what
makes a replay idempotent.

Trade id: the signal id of the entry that opened a round trip (flat -> long -> flat, per
pair, as the PortfolioManager counts them). Every row of a trade carries it: its signals
(exit signals included), risk decisions, orders, order events and fills, so one
``trade_id`` joins the whole lifecycle.

P&L follows the PortfolioManager's rules: a sell of ``q`` at ``p`` realises
``(p - avg_entry) * q - sell fee - q / open qty * open entry fees``; fees are in every figure.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gal_friday.config import FeeSettings, StrategySettings
from gal_friday.domain import PortfolioSnapshot
from gal_friday.events import (
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    PortfolioEvent,
    PredictionEvent,
    Side,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingState,
    TradingStateChangedEvent,
)
from gal_friday.store.base import StoredOrder, StoredPosition
from gal_friday.store.memory import DayFigures

Row = tuple[str, dict[str, Any]]  # (record kind, row)
ZERO = Decimal(0)
NS_PER_DAY = 86_400 * 1_000_000_000
_HUNDRED = Decimal(100)
_MAX_ORDERS = 20_000
_MAX_SIGNALS = 20_000

AUDITED: tuple[type[Event], ...] = (
    FeatureEvent,
    PredictionEvent,
    TradeSignalProposedEvent,
    TradeSignalApprovedEvent,
    TradeSignalRejectedEvent,
    ExecutionReportEvent,
    PortfolioEvent,
    TradingStateChangedEvent,
    FlattenEvent,
)


def norm(value: Decimal) -> Decimal:
    """``value`` without trailing zeros or exponent (``1.50`` -> ``1.5``, ``1E+1`` -> ``10``):
    one spelling per number, so text keys in SQLite compare as numbers do."""
    return Decimal(format(value.normalize(), "f"))


def day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class _Trade:
    trade_id: str
    pair: str
    entry_ts_ns: int
    open_qty: Decimal = ZERO
    open_avg: Decimal = ZERO
    open_entry_fees: Decimal = ZERO
    entry_qty: Decimal = ZERO
    entry_notional: Decimal = ZERO
    entry_fees: Decimal = ZERO
    exit_qty: Decimal = ZERO
    exit_notional: Decimal = ZERO
    exit_fees: Decimal = ZERO
    gross_pnl: Decimal = ZERO
    pnl: Decimal = ZERO
    fills: int = 0
    exit_ts_ns: int | None = None

    def buy(self, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        new_qty = self.open_qty + qty
        self.open_avg = (self.open_avg * self.open_qty + price * qty) / new_qty
        self.open_qty = new_qty
        self.open_entry_fees += fee
        self.entry_qty += qty
        self.entry_notional += qty * price
        self.entry_fees += fee
        self.fills += 1

    def sell(self, qty: Decimal, price: Decimal, fee: Decimal, ts_ns: int) -> Decimal:
        """Book a sell; returns its realised P&L (fees included)."""
        closed = min(qty, self.open_qty)
        entry_fee = (
            self.open_entry_fees
            if closed == self.open_qty
            else self.open_entry_fees * closed / self.open_qty
        )
        gross = (price - self.open_avg) * closed
        pnl = gross - fee - entry_fee
        self.open_qty -= closed
        self.open_entry_fees -= entry_fee
        self.exit_qty += qty
        self.exit_notional += qty * price
        self.exit_fees += fee
        self.gross_pnl += gross
        self.pnl += pnl
        self.fills += 1
        if self.open_qty <= 0:
            self.exit_ts_ns = ts_ns
        return pnl

    @property
    def closed(self) -> bool:
        return self.open_qty <= 0

    def row(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "pair": self.pair,
            "status": "closed" if self.closed else "open",
            "entry_ts_ns": self.entry_ts_ns,
            "exit_ts_ns": self.exit_ts_ns,
            "entry_qty": self.entry_qty,
            "exit_qty": self.exit_qty,
            "open_qty": self.open_qty,
            "open_avg": self.open_avg,
            "avg_entry": self.entry_notional / self.entry_qty if self.entry_qty else None,
            "avg_exit": self.exit_notional / self.exit_qty if self.exit_qty else None,
            "entry_fees": self.entry_fees,
            "exit_fees": self.exit_fees,
            "open_entry_fees": self.open_entry_fees,
            "gross_pnl": self.gross_pnl,
            "pnl": self.pnl,
            "fills": self.fills,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> _Trade:
        avg_entry = row["avg_entry"] or ZERO
        avg_exit = row["avg_exit"] or ZERO
        return cls(
            trade_id=row["trade_id"],
            pair=row["pair"],
            entry_ts_ns=row["entry_ts_ns"],
            open_qty=row["open_qty"],
            open_avg=row["open_avg"],
            open_entry_fees=row["open_entry_fees"],
            entry_qty=row["entry_qty"],
            entry_notional=avg_entry * row["entry_qty"],
            entry_fees=row["entry_fees"],
            exit_qty=row["exit_qty"],
            exit_notional=avg_exit * row["exit_qty"],
            exit_fees=row["exit_fees"],
            gross_pnl=row["gross_pnl"],
            pnl=row["pnl"],
            fills=row["fills"],
            exit_ts_ns=row["exit_ts_ns"],
        )


@dataclass(slots=True)
class _Order:
    trade_id: str
    created_ts_ns: int
    booked_qty: Decimal = ZERO
    booked_notional: Decimal = ZERO
    fees: Decimal = ZERO


@dataclass(slots=True)
class _Day:
    day: int
    start_equity: Decimal | None
    end_equity: Decimal | None = None
    realised: Decimal = ZERO
    fees: Decimal = ZERO
    trades: int = 0
    wins: int = 0
    losses: int = 0
    updated_ts_ns: int = 0

    def row(self) -> dict[str, Any]:
        pnl = None
        if self.start_equity is not None and self.end_equity is not None:
            pnl = self.end_equity - self.start_equity
        return {
            "day": day_name(self.day),
            "day_start_ts_ns": self.day * NS_PER_DAY,
            "start_equity": self.start_equity,
            "end_equity": self.end_equity,
            "equity_pnl": pnl,
            "realised_pnl": self.realised,
            "fees": self.fees,
            "trades": self.trades,
            "wins": self.wins,
            "losses": self.losses,
            "updated_ts_ns": self.updated_ts_ns,
        }


@dataclass(slots=True)
class _Market:
    """The latest prediction and features per pair, to say what a signal was based on."""

    prediction: dict[str, PredictionEvent] = field(default_factory=dict)
    features: dict[str, FeatureEvent] = field(default_factory=dict)


class AuditLedger:
    """Event in, rows out, in event order."""

    def __init__(
        self,
        strategy: StrategySettings,
        fees: FeeSettings,
        *,
        equity_interval_s: float = 10.0,
        quote: str = "USD",
    ) -> None:
        self.strategy = strategy
        self.fee_settings = fees
        self.quote = quote
        self.equity_interval_ns = int(equity_interval_s * 1e9)
        self._market = _Market()
        self._open: dict[str, _Trade] = {}  # pair -> open round trip
        self._orders: OrderedDict[str, _Order] = OrderedDict()
        self._signal_trades: OrderedDict[str, str] = OrderedDict()  # signal id -> trade id
        self._day: _Day | None = None
        self._equity: Decimal | None = None
        self._last_equity_ts: int | None = None
        self._position_qty: dict[str, Decimal] = {}
        self._marks: dict[str, Decimal] = {}

    # --- restart ----------------------------------------------------------------------------

    def restore(
        self,
        open_trades: Iterable[Mapping[str, Any]],
        orders: Iterable[StoredOrder],
        day: DayFigures | None = None,
        positions: Iterable[StoredPosition] = (),
    ) -> None:
        """Carry on from the store after a restart: open round trips, what each recent order
        has already booked (so a re-sent report books nothing twice), the current day's
        figures as the store adds them up (so its summary counts the whole day), and the
        positions it holds (so a pair flat since then gets its zero row)."""
        for pos in positions:
            if pos.qty:
                self._position_qty[pos.pair] = pos.qty
                self._marks[pos.pair] = pos.mark
        if day is not None:
            self._day = _Day(
                day.day,
                day.start_equity,
                day.end_equity,
                day.realised,
                day.fees,
                day.trades,
                day.wins,
                day.losses,
            )
            self._equity = day.end_equity
        for row in open_trades:
            trade = _Trade.from_row(row)
            self._open[trade.pair] = trade
        for o in orders:
            notional = (o.avg_price or ZERO) * o.filled_qty
            self._remember_order(
                o.client_order_id,
                _Order(
                    o.trade_id or o.client_order_id, o.created_ts_ns, o.filled_qty, notional, o.fees
                ),
            )

    # --- dispatch ---------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Row]:
        if isinstance(event, FeatureEvent):
            self._market.features[event.pair] = event
            return []
        if isinstance(event, PredictionEvent):
            self._market.prediction[event.pair] = event
            return []
        if isinstance(event, TradeSignalProposedEvent):
            return [*self._roll(event.ts_ns), self._signal(event)]
        if isinstance(event, TradeSignalApprovedEvent | TradeSignalRejectedEvent):
            return [*self._roll(event.ts_ns), self._decision(event)]
        if isinstance(event, ExecutionReportEvent):
            return self._roll(event.ts_ns) + self._report(event)
        if isinstance(event, PortfolioEvent):
            return self._roll(event.snapshot.ts_ns) + self._portfolio(event.snapshot)
        if isinstance(event, TradingStateChangedEvent | FlattenEvent):
            return [*self._roll(event.ts_ns), self._halt(event)]
        return []

    def day_summary(self) -> list[Row]:
        """The running summary of the current UTC day (written at stop and at each roll)."""
        return [] if self._day is None else [("daily_summary", self._day.row())]

    # --- signals and risk -------------------------------------------------------------------

    def _signal(self, s: TradeSignalProposedEvent) -> Row:
        trade_id = s.signal_id
        if s.is_exit and s.pair in self._open:
            trade_id = self._open[s.pair].trade_id
        self._remember_signal(s.signal_id, trade_id)
        pred = self._market.prediction.get(s.pair)
        feat = self._market.features.get(s.pair)
        threshold = (
            self.strategy.buy_threshold if s.side is Side.BUY else self.strategy.sell_threshold
        )
        features = (
            None
            if feat is None
            else json.dumps({n: _finite(v) for n, v in zip(feat.names, feat.values, strict=True)})
        )
        return (
            "signal",
            {
                "signal_id": s.signal_id,
                "trade_id": trade_id,
                "pair": s.pair,
                "side": str(s.side),
                "order_type": str(s.order_type),
                "is_exit": s.is_exit,
                "entry_price": s.entry_price,
                "stop_loss": s.stop_loss,
                "take_profit": s.take_profit,
                "prob_up": _finite(s.prob_up),
                "threshold": threshold,
                "model_id": s.model_id,
                "prediction_ts_ns": pred.ts_ns if pred else None,
                "features_ts_ns": feat.ts_ns if feat else None,
                "features": features,
                "ts_ns": s.ts_ns,
            },
        )

    def _decision(self, d: TradeSignalApprovedEvent | TradeSignalRejectedEvent) -> Row:
        approved = isinstance(d, TradeSignalApprovedEvent)
        checks = json.dumps([{"check": n, "passed": p, "detail": t} for n, p, t in d.checks])
        return (
            "risk_decision",
            {
                "signal_id": d.signal_id,
                "trade_id": self._signal_trades.get(d.signal_id, d.signal_id),
                "pair": d.pair,
                "approved": approved,
                "reason": None if isinstance(d, TradeSignalApprovedEvent) else d.reason,
                "qty": d.qty if isinstance(d, TradeSignalApprovedEvent) else None,
                "limit_price": d.limit_price if isinstance(d, TradeSignalApprovedEvent) else None,
                "checks": checks,
                "ts_ns": d.ts_ns,
            },
        )

    # --- orders and fills -------------------------------------------------------------------

    def _report(self, r: ExecutionReportEvent) -> list[Row]:
        order = self._order_of(r)
        rows: list[Row] = []
        delta = r.filled_qty - order.booked_qty
        if delta > 0:
            price = _fill_price(r, order, delta)
            fee = r.fee * price if r.fee and r.fee_asset not in (self.quote, "") else r.fee
            rows += self._fill(r, order, delta, price, fee)
            order.booked_qty = r.filled_qty
            order.booked_notional += delta * price
            order.fees += fee
        rows.append(("order", self._order_row(r, order)))
        rows.append(
            (
                "order_event",
                {
                    "event_key": f"{r.client_order_id}|{r.ts_ns}|{r.status}|{norm(r.filled_qty)}",
                    "client_order_id": r.client_order_id,
                    "trade_id": order.trade_id,
                    "signal_id": r.signal_id,
                    "status": str(r.status),
                    "filled_qty": r.filled_qty,
                    "avg_price": r.avg_price,
                    "last_fill_qty": r.last_fill_qty,
                    "last_fill_price": r.last_fill_price,
                    "fee": r.fee,
                    "fee_asset": r.fee_asset,
                    "reason": r.reason,
                    "ts_ns": r.ts_ns,
                },
            )
        )
        return rows

    def _order_of(self, r: ExecutionReportEvent) -> _Order:
        order = self._orders.get(r.client_order_id)
        if order is None:
            order = _Order(self._trade_id_for(r), r.ts_ns)
            self._remember_order(r.client_order_id, order)
        return order

    def _trade_id_for(self, r: ExecutionReportEvent) -> str:
        known = self._signal_trades.get(r.signal_id or "")
        if known is not None and known != r.signal_id:
            return known  # an exit signal's order: the round trip it closes
        if r.pair in self._open:
            return self._open[r.pair].trade_id
        return r.signal_id or r.client_order_id

    def _fill(
        self, r: ExecutionReportEvent, order: _Order, qty: Decimal, price: Decimal, fee: Decimal
    ) -> list[Row]:
        rows: list[Row] = []
        realised: Decimal | None = None
        day = self._day
        trade = self._open.get(r.pair)
        if r.side is Side.BUY:
            if trade is None:
                trade = self._open[r.pair] = _Trade(order.trade_id, r.pair, r.ts_ns)
            trade.buy(qty, price, fee)
        elif trade is not None:
            realised = trade.sell(qty, price, fee, r.ts_ns)
        else:
            realised = -fee  # nothing held to attribute proceeds to; the fee is still a cost
        if day is not None:
            day.fees += fee
            day.realised += realised or ZERO
        rows.append(
            (
                "fill",
                {
                    "client_order_id": r.client_order_id,
                    "cum_qty": norm(r.filled_qty),
                    "trade_id": trade.trade_id if trade else order.trade_id,
                    "signal_id": r.signal_id,
                    "pair": r.pair,
                    "side": str(r.side),
                    "qty": qty,
                    "price": price,
                    "fee": fee,
                    "fee_asset": r.fee_asset or self.quote,
                    "liquidity": self._liquidity(qty * price, fee),
                    "realised_pnl": realised,
                    "ts_ns": r.ts_ns,
                },
            )
        )
        if trade is not None:
            rows.append(("trade", trade.row()))
            if trade.closed:
                rows += self._close(trade)
        return rows

    def _close(self, trade: _Trade) -> list[Row]:
        del self._open[trade.pair]
        day = self._day
        if day is None:
            return []
        day.trades += 1
        if trade.pnl < 0:
            day.losses += 1
        else:
            day.wins += 1
        return [("daily_summary", day.row())]

    def _liquidity(self, notional: Decimal, fee: Decimal) -> str | None:
        """Maker or taker, when the fee rate says so unambiguously; else unknown."""
        if not fee or not notional:
            return None
        rate = fee / notional * _HUNDRED
        for name, pct in (
            ("maker", self.fee_settings.maker_pct),
            ("taker", self.fee_settings.taker_pct),
        ):
            if abs(rate - pct) <= Decimal("0.005"):
                return name
        return None

    @staticmethod
    def _order_row(r: ExecutionReportEvent, order: _Order) -> dict[str, Any]:
        return {
            "client_order_id": r.client_order_id,
            "trade_id": order.trade_id,
            "signal_id": r.signal_id,
            "pair": r.pair,
            "side": str(r.side),
            "order_type": str(r.order_type),
            "qty": r.order_qty,
            "limit_price": r.limit_price,
            "trigger_price": r.trigger_price,
            "exchange_order_id": r.exchange_order_id,
            "status": str(r.status),
            "filled_qty": r.filled_qty,
            "avg_price": r.avg_price,
            "fees": order.fees,
            "reason": r.reason,
            "created_ts_ns": order.created_ts_ns,
            "updated_ts_ns": r.ts_ns,
        }

    # --- portfolio, halts, days -----------------------------------------------------------

    def _portfolio(self, snap: PortfolioSnapshot) -> list[Row]:
        self._equity = snap.equity
        day = self._day
        if day is not None:
            if day.start_equity is None:
                day.start_equity = snap.day_start_equity
            day.end_equity = snap.equity
        qty = {p.pair: p.qty for p in snap.positions}
        due = (
            self._last_equity_ts is None
            or snap.ts_ns - self._last_equity_ts >= self.equity_interval_ns
        )
        rows: list[Row] = []
        if due:
            self._last_equity_ts = snap.ts_ns
            rows.append(("equity", _equity_row(snap)))
            rows += self.day_summary()
        if due or qty != self._position_qty:
            rows += self._positions(snap, qty)
        return rows

    def _positions(self, snap: PortfolioSnapshot, qty: dict[str, Decimal]) -> list[Row]:
        rows: list[Row] = [
            (
                "position",
                {
                    "pair": p.pair,
                    "qty": p.qty,
                    "avg_entry": p.avg_entry,
                    "mark": p.mark,
                    "unrealised_pnl": p.unrealised_pnl,
                    "opened_ts_ns": p.opened_ts_ns,
                    "ts_ns": snap.ts_ns,
                },
            )
            for p in snap.positions
        ]
        for pair in self._position_qty.keys() - qty.keys():  # closed since: now flat
            rows.append(
                (
                    "position",
                    {
                        "pair": pair,
                        "qty": ZERO,
                        "avg_entry": ZERO,
                        "mark": self._marks.get(pair, ZERO),
                        "unrealised_pnl": ZERO,
                        "opened_ts_ns": 0,
                        "ts_ns": snap.ts_ns,
                    },
                )
            )
        self._position_qty = qty
        self._marks.update({p.pair: p.mark for p in snap.positions})
        return rows

    @staticmethod
    def _halt(e: TradingStateChangedEvent | FlattenEvent) -> Row:
        """A change of the trading state (halt, reduce, resume) or a flatten request."""
        reason: str | None
        if isinstance(e, FlattenEvent):
            kind, reason, source, operator = "flatten", None, "operator", e.operator
        elif e.state is TradingState.ACTIVE:
            kind, reason, source, operator = "resume", None, "operator", e.source
        else:
            kind = "halt" if e.halted else "reduce"
            reason, source, operator = e.reason, e.source, None
        return (
            "halt",
            {
                "event_key": f"{kind}|{e.ts_ns}|{source}|{operator or ''}",
                "kind": kind,
                "reason": reason,
                "source": source,
                "operator": operator,
                "ts_ns": e.ts_ns,
            },
        )

    def _roll(self, ts_ns: int) -> list[Row]:
        """Close the UTC day when an event of a later day arrives (event time, not wall)."""
        day = ts_ns // NS_PER_DAY
        current = self._day
        if current is None or day > current.day:
            self._day = _Day(day, self._equity, self._equity, updated_ts_ns=ts_ns)
            return [] if current is None else [("daily_summary", current.row())]
        current.updated_ts_ns = max(current.updated_ts_ns, ts_ns)
        return []

    # --- bounded memory ---------------------------------------------------------------------

    def _remember_order(self, coid: str, order: _Order) -> None:
        self._orders[coid] = order
        if len(self._orders) > _MAX_ORDERS:
            self._orders.popitem(last=False)

    def _remember_signal(self, signal_id: str, trade_id: str) -> None:
        self._signal_trades[signal_id] = trade_id
        if len(self._signal_trades) > _MAX_SIGNALS:
            self._signal_trades.popitem(last=False)


def _fill_price(r: ExecutionReportEvent, order: _Order, delta: Decimal) -> Decimal:
    """The price of the newly filled ``delta``; from the cumulative average if reports were
    missed (as the PortfolioManager does)."""
    if r.last_fill_qty == delta and r.last_fill_price is not None:
        return r.last_fill_price
    if r.avg_price is not None:
        return (r.avg_price * r.filled_qty - order.booked_notional) / delta
    if r.last_fill_price is not None:
        return r.last_fill_price
    raise ValueError(f"fill of {r.client_order_id} carries no price")


def _equity_row(snap: PortfolioSnapshot) -> dict[str, Any]:
    return {
        "ts_ns": snap.ts_ns,
        "equity": snap.equity,
        "cash": snap.cash,
        "free_cash": snap.free_cash,
        "realised_pnl": snap.realised_pnl,
        "unrealised_pnl": sum((p.unrealised_pnl for p in snap.positions), ZERO),
        "fees_paid": snap.fees_paid,
        "peak_equity": snap.peak_equity,
        "drawdown": snap.total_drawdown,
        "exposure": snap.exposure,
        "consecutive_losses": snap.consecutive_losses,
        "day_start_equity": snap.day_start_equity,
        "week_start_equity": snap.week_start_equity,
    }
