"""The trading state (ACTIVE / REDUCING / HALTED): one definition, one owner, one event.

Anyone may ask for a change with a command on the bus: ``HaltEvent`` (the monitor's triggers,
crash recovery, the operator), ``ReduceEvent`` (an operator), ``ResumeEvent`` (only an
operator). One :class:`TradingStateMachine`, run by the RiskManager (it gates every entry, so
its verdicts and the state can never disagree), decides and announces each change with one
``TradingStateChangedEvent``. Execution, monitoring, the control socket, the cockpit, the audit
store, the time series and the backtester follow that event and nothing else.

The rules, in one place:

* HALT: ACTIVE or REDUCING become HALTED. A HALT while HALTED changes nothing (the first
  reason stands: it is the one the operator must read before resuming).
* REDUCE: ACTIVE becomes REDUCING. A HALT is never softened to REDUCING; a second REDUCE
  changes nothing.
* RESUME: HALTED or REDUCING become ACTIVE; when ACTIVE it changes nothing.
"""

from __future__ import annotations

from gal_friday.events import (
    HaltEvent,
    ReduceEvent,
    ResumeEvent,
    TradingState,
    TradingStateChangedEvent,
)

TradingCommand = HaltEvent | ReduceEvent | ResumeEvent
TRADING_COMMANDS = (HaltEvent, ReduceEvent, ResumeEvent)


def initial_state(ts_ns: int = 0) -> TradingStateChangedEvent:
    """The state every run starts in (a remembered HALT arrives as a command at start-up)."""
    return TradingStateChangedEvent(TradingState.ACTIVE, TradingState.ACTIVE, "", "", ts_ns)


class TradingStateMachine:
    """The rules of the module doc; :attr:`current` is the latest state as announced."""

    def __init__(self, current: TradingStateChangedEvent | None = None) -> None:
        self.current = current or initial_state()

    @property
    def state(self) -> TradingState:
        return self.current.state

    @property
    def halted(self) -> bool:
        return self.current.state is TradingState.HALTED

    def apply(self, command: TradingCommand) -> TradingStateChangedEvent | None:
        """The change a command makes, or None when the state already satisfies it."""
        if isinstance(command, ResumeEvent):
            return self._to(TradingState.ACTIVE, "", command.operator, command.ts_ns)
        if isinstance(command, ReduceEvent):
            if self.state is TradingState.HALTED:
                return None
            return self._to(TradingState.REDUCING, command.reason, command.source, command.ts_ns)
        return self.halt(command.reason, command.source, command.ts_ns)

    def halt(self, reason: str, source: str, ts_ns: int) -> TradingStateChangedEvent | None:
        """HALT for ``reason`` (the owner's own breaches come here directly)."""
        return self._to(TradingState.HALTED, reason, source, ts_ns)

    def _to(
        self, state: TradingState, reason: str, source: str, ts_ns: int
    ) -> TradingStateChangedEvent | None:
        if state is self.state:
            return None
        self.current = TradingStateChangedEvent(state, self.state, reason, source, ts_ns)
        return self.current
