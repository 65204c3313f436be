"""Classic strategies trading through the same risk, execution and portfolio code.

A classic rule (an SMA crossover) is expressed the way the model is: as predictions, 1.0 for
"buy" and 0.0 for "exit" (see ``signals.sma_cross_signals``). ``MarketStrategy`` is the
StrategyArbitrator with one change: it enters at market instead of joining the bid, and asks
for no minimum edge, so a rule that says "buy now" buys at the next price, as classic
backtesters fill it. Exits (reversal, holding time), position tracking and brackets are the
StrategyArbitrator's own.
"""

from __future__ import annotations

from gal_friday.events import OrderType, PredictionEvent, TradeSignalProposedEvent
from gal_friday.strategy import PairState, StrategyArbitrator


class MarketStrategy(StrategyArbitrator):
    """Buys at market on ``prob_up > buy_threshold``; exits on ``prob_up < sell_threshold``."""

    def _enter(self, pred: PredictionEvent, state: PairState) -> TradeSignalProposedEvent | None:
        assert state.bid is not None
        bracket = self._bracket(state, state.bid)
        if bracket is None:
            return None
        return self._propose_entry(pred, state, OrderType.MARKET, state.bid, *bracket)
