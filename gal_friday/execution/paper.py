"""ExecutionHandler, paper venue: approved signals become orders in the local matching engine.

Paper trading runs the same strategy, risk and portfolio code as live; only the venue
differs. Orders go to a ``MatchingEngine`` fed with the live (or simulated) book and trades,
so limit entries fill only when the market touches or crosses them, with maker/taker fees,
slippage and latency from configuration. Every state change is published as an
ExecutionReportEvent. A limit entry not filled within ``entry_timeout_s`` is cancelled
(converting the remainder to a market order comes with the live execution handler).

The live Kraken venue (private WebSocket v2) arrives with the rest of the execution issue.
"""

from __future__ import annotations

import logging

from gal_friday.bus import EventBus, Policy
from gal_friday.config import FeeSettings, PaperSettings
from gal_friday.events import (
    BookEvent,
    Event,
    OrderStatus,
    OrderType,
    TradeEvent,
    TradeSignalApprovedEvent,
)
from gal_friday.sim.matching import MatchingEngine, OrderRequest, OrderUpdate, to_report

log = logging.getLogger(__name__)
_NS = 1_000_000_000
_OPEN = {OrderStatus.SUBMITTED, OrderStatus.ACKNOWLEDGED, OrderStatus.PARTIALLY_FILLED}


class PaperExecution:
    """Subscribes to approvals and market data; publishes execution reports."""

    def __init__(self, settings: PaperSettings, fees: FeeSettings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = MatchingEngine(
            fees.maker_pct, fees.taker_pct, latency_ns=int(settings.latency_ms * 1_000_000),
            slippage_bps=settings.slippage_bps,
        )
        self._now = 0
        self._deadlines: dict[str, int] = {}  # client order id -> entry timeout (ns)
        self._seq = 0
        self.reports = 0

    def attach(self) -> None:
        self.bus.subscribe((TradeSignalApprovedEvent, BookEvent, TradeEvent), self.on_event,
                           name="execution", policy=Policy.BLOCK, maxsize=8192)

    async def on_event(self, event: Event) -> None:
        for update in self.handle(event):
            self.reports += 1
            await self.bus.publish(to_report(update))

    def handle(self, event: Event) -> list[OrderUpdate]:
        """The order updates one event causes (pure, for tests and the backtester)."""
        if isinstance(event, BookEvent):
            self._now = max(self._now, event.received_ts_ns)
            return [*self.engine.on_book(event), *self._expire()]
        if isinstance(event, TradeEvent):
            self._now = max(self._now, event.received_ts_ns)
            return self.engine.on_trade(event)
        if isinstance(event, TradeSignalApprovedEvent):
            return self._submit(event)
        return []

    def _submit(self, signal: TradeSignalApprovedEvent) -> list[OrderUpdate]:
        self._seq += 1
        coid = f"gf{self._seq:06d}{signal.signal_id[-8:]}"[:18]  # Kraken: <= 18 ASCII chars
        order = OrderRequest(coid, signal.pair, signal.side, signal.order_type, signal.qty,
                         signal.limit_price, signal.signal_id)
        if signal.order_type is OrderType.LIMIT and not signal.is_exit:
            self._deadlines[coid] = self._now + int(self.settings.entry_timeout_s * _NS)
        log.info("paper order", extra={"client_order_id": coid, "pair": signal.pair,
                                       "side": str(signal.side), "qty": str(signal.qty),
                                       "limit": str(signal.limit_price)})
        return self.engine.submit(order, self._now)

    def _expire(self) -> list[OrderUpdate]:
        """Cancel (or convert to market) entries past their timeout."""
        updates: list[OrderUpdate] = []
        for coid, deadline in list(self._deadlines.items()):
            if self.engine.status(coid) not in _OPEN:
                del self._deadlines[coid]
                continue
            if self._now < deadline:
                continue
            del self._deadlines[coid]
            log.info("paper entry timed out, cancelling", extra={"client_order_id": coid})
            updates += self.engine.cancel(coid, self._now)
        return updates
