"""Classic strategies trading through the same risk, execution and portfolio code.

A classic rule (an SMA crossover) is expressed the way the model is: as predictions, 1.0 for
"buy" and 0.0 for "exit" (see ``signals.sma_cross_signals``). ``MarketStrategy`` is the
StrategyArbitrator with one change: it enters at market instead of joining the bid, and asks
for no minimum edge, so a rule that says "buy now" buys at the next price, as classic
backtesters fill it. Exits (reversal, holding time), position tracking and brackets are the
StrategyArbitrator's own.
"""

from __future__ import annotations

from gal_friday.events import OrderType, PredictionEvent, Side, TradeSignalProposedEvent
from gal_friday.strategy import StrategyArbitrator


class MarketStrategy(StrategyArbitrator):
    """Buys at market on ``prob_up > buy_threshold``; exits on ``prob_up < sell_threshold``."""

    def _on_prediction(self, pred: PredictionEvent) -> TradeSignalProposedEvent | None:
        state = self._state(pred.pair)
        if state.pending is not None or state.bid is None:
            return None
        if state.qty > 0:
            if self.s.exit_on_reversal and pred.prob_up < self.s.sell_threshold:
                return self._exit(pred.pair, state, "prediction reversal", pred.ts_ns,
                                  pred.prob_up, pred.model_id)
            return None
        if pred.prob_up <= self.s.buy_threshold:
            return None
        bracket = self._bracket(state, state.bid)
        if bracket is None:
            return None
        stop, target = bracket
        signal = self._signal(pred.pair, Side.BUY, OrderType.MARKET, state.bid, stop, target,
                              pred.prob_up, pred.model_id, pred.ts_ns, is_exit=False)
        self._brackets[signal.signal_id] = (stop, target)
        state.pending = signal.signal_id
        return signal
