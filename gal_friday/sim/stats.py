"""The simulator's counters, shared by its server, protocol and fan-out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimStats:
    """Counters for tests and the ``/sim/stats`` endpoint."""

    connections_accepted: int = 0
    connections_open: int = 0
    connections_refused: int = 0  # WebSocket handshakes refused during a simulated outage
    subscriptions: int = 0  # successful subscribe acks, ever
    unsubscriptions: int = 0
    active_subscriptions: int = 0
    requests: int = 0
    errors_sent: int = 0
    frames_sent: int = 0
    slow_disconnects: int = 0
    rest_requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def fault(self, name: str) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1
