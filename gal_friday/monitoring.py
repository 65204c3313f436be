"""MonitoringService: watches health and risk, and HALTs trading when something is wrong
[FR-901..908].

Triggers (each publishes one ``HaltEvent(reason, source)`` per new breach):

* ``connection``: a watched component (``kraken.*`` SystemStatusEvents, and the public feed's
  own state from FeedStatsEvent) DISCONNECTED or DEGRADED for longer than
  ``connection_down_s``;
* ``stale_data``: no market data for a pair for ``market_data_staleness_s`` (FeedStatsEvent's
  ``data_age_s``, book and candle events; counted from start-up, so a feed that never
  delivers is caught too, and from the last report, so a feed that went silent is caught);
* ``host``: CPU or RAM above ``max_cpu_pct`` / ``max_ram_pct``, or free disk below
  ``min_disk_free_pct``, continuously for ``host_breach_s``;
* ``drawdown`` / ``consecutive_losses``: the PortfolioEvent's snapshot against the risk limits
  (the RiskManager checks them too; whoever is first HALTs, the other does not HALT twice);
* ``api_errors``: ``max_failed_placements`` REJECTED / ERROR execution reports in a row (an
  ACKNOWLEDGED order resets the count); ``auth``: any report whose reason looks like an
  authentication failure HALTs at once (retrying cannot fix a key);
* ``volatility``: a pair's price range over ``volatility_window_min`` minutes (candle closes
  and book mids) wider than ``max_volatility_pct`` of its low;
* ``monitoring``: a health check itself failed (fail safe, NFR-603).

An operator's HaltEvent is simply respected. Level breaches (all but the API ones) fire when
they begin; one still present when the operator resumes counts as acknowledged and fires again
only after it has cleared and come back, like the RiskManager's limits, so a resume is not
undone by the very condition the operator chose to accept.

HALT policy (``halt_policy``): ``close`` also publishes ``FlattenEvent("halt:<source>")`` for
every automatic HALT (ours, the RiskManager's, crash recovery's), so the strategy closes every
position at market; ``keep`` leaves positions with their stop-loss / take-profit orders at the
venue. An operator's HALT never flattens by itself: the operator has a flatten command of their
own.

Only an operator resumes: this service never publishes ResumeEvent. Its HaltEvents are
requests: the trading state's owner (``gal_friday.trading_state``, run by the RiskManager)
decides, and this service follows the ``TradingStateChangedEvent`` like every other module,
applying the HALT policy to each automatic HALT it announces and publishing
``SystemStatusEvent("monitoring", ...)`` for display.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.domain import PortfolioSnapshot
from gal_friday.events import (
    BookEvent,
    CandleEvent,
    ComponentState,
    Event,
    ExecutionReportEvent,
    FeedStatsEvent,
    FlattenEvent,
    HaltEvent,
    OrderStatus,
    PortfolioEvent,
    SystemStatusEvent,
    TradingState,
    TradingStateChangedEvent,
    now_ns,
)
from gal_friday.risk import breaches
from gal_friday.trading_state import initial_state

log = logging.getLogger(__name__)

NS = 1_000_000_000
WATCHED_COMPONENTS = ("kraken.",)  # SystemStatusEvent components whose outage HALTs
FEED_COMPONENT = "kraken.ws.public (feed)"
DOWN = frozenset({ComponentState.DISCONNECTED, ComponentState.DEGRADED})
UP = frozenset({ComponentState.CONNECTED, ComponentState.STOPPED})
# Lower-cased fragments of Kraken's auth errors and of VenueAuthError / KrakenAuthError texts.
AUTH_MARKERS = (
    "invalid key",
    "invalid signature",
    "permission denied",
    "eauth",
    "rejected the api key",
    "websocket token",
)
FAILED = frozenset({OrderStatus.REJECTED, OrderStatus.ERROR})
MID_SAMPLE_NS = NS  # one price a second and pair is plenty for a minutes-long window


_DISPLAY = {
    TradingState.ACTIVE: ComponentState.CONNECTED,
    TradingState.REDUCING: ComponentState.DEGRADED,
    TradingState.HALTED: ComponentState.STOPPED,
}


@dataclass(frozen=True, slots=True)
class HostSample:
    cpu_pct: float
    ram_pct: float
    disk_free_pct: float


HostProbe = Callable[[], HostSample]


class PsutilProbe:
    """CPU, RAM and free disk from psutil; every call is a cheap, non-blocking syscall
    (``cpu_percent(None)`` measures since the previous call, so it never sleeps)."""

    def __init__(self, path: str = ".") -> None:
        self.path = path if os.path.exists(path) else "."
        psutil.cpu_percent(None)  # the first reading is meaningless: prime it

    def __call__(self) -> HostSample:
        disk = psutil.disk_usage(self.path)
        free_pct = 100.0 * disk.free / disk.total if disk.total else 100.0
        return HostSample(
            float(psutil.cpu_percent(None)), float(psutil.virtual_memory().percent), free_pct
        )


Breach = tuple[str, str, str]  # (key, source, reason)


class MonitoringService:
    """Bus module: health and risk watch, HALT trigger and HALT policy; see the module doc.

    Lifecycle: ``attach()`` subscribes (do it before ``bus.start()`` so nothing is missed),
    ``await start()`` publishes the initial status and runs :meth:`check` every
    ``check_interval_s``, ``await stop()`` ends that loop.
    """

    NAME = "monitoring"

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        *,
        clock: Callable[[], int] = now_ns,
        host_probe: HostProbe | None = None,
    ) -> None:
        self.settings = settings.monitoring
        self.risk_settings = settings.risk
        self.pairs = settings.pairs
        self._bus = bus
        self._clock = clock
        self._probe = host_probe or PsutilProbe(settings.paths.data_dir)
        self.trading = initial_state()  # as the owner last announced it
        self._halt_requested = False  # our HaltEvent is on its way to the owner
        self.active: dict[str, str] = {}  # breach key -> reason, for display and tests
        self.halts = 0  # HaltEvents this service published
        self.failed_in_a_row = 0
        now = clock()
        self._last_seen = dict.fromkeys(self.pairs, now)
        self._down_since: dict[str, tuple[int, str]] = {}
        self._over_since: dict[str, int] = {}
        self._prices: dict[str, deque[tuple[int, float]]] = {p: deque() for p in self.pairs}
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> TradingState:
        return self.trading.state

    @property
    def halted(self) -> bool:
        """HALTED, or about to be: a HALT we asked for has not been announced yet."""
        return self.trading.halted or self._halt_requested

    @property
    def halt_reason(self) -> str:
        return self.trading.reason if self.trading.halted else ""

    @property
    def halt_source(self) -> str:
        return self.trading.source if self.trading.halted else ""

    # --- lifecycle -------------------------------------------------------------------------

    def attach(self) -> None:
        """Control, health, portfolio and execution events (BLOCK: none may be missed) and
        book tops (CONFLATE: only the latest mid matters)."""
        if self._subs:
            return
        self._subs = [
            self._bus.subscribe(
                (
                    TradingStateChangedEvent,
                    ExecutionReportEvent,
                    PortfolioEvent,
                    SystemStatusEvent,
                    FeedStatsEvent,
                    CandleEvent,
                ),
                self.on_event,
                name=self.NAME,
                policy=Policy.BLOCK,
            ),
            self._bus.subscribe(
                BookEvent, self.on_book, name=f"{self.NAME}.book", policy=Policy.CONFLATE
            ),
        ]

    async def start(self) -> None:
        if self._task is not None:
            return
        now = self._clock()
        self._last_seen = dict.fromkeys(self.pairs, now)
        await self._publish_status()
        self._task = asyncio.create_task(self._run(), name="monitoring:checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval_s)
            try:
                await self.check()
            except Exception:  # keep watching: one bad round must not end monitoring
                log.exception("monitoring round failed")

    # --- periodic checks -------------------------------------------------------------------

    async def check(self) -> None:
        """One round of the time-based checks; a failing check HALTs (fail safe)."""
        now = self._clock()
        try:
            found = {
                "connection": self._connection_breaches(now),
                "stale": self._stale_breaches(now),
                "host": self._host_breaches(now),
                "volatility": self._volatility_breaches(now),
            }
        except Exception as exc:
            log.exception("health check failed")
            await self._breach(
                (
                    "monitoring:failure",
                    "monitoring",
                    f"health check failed: {type(exc).__name__}: {exc}",
                )
            )
            return
        self._clear_if_absent("monitoring", ())
        for domain, breaches_now in found.items():
            await self._apply(domain, breaches_now)

    def _connection_breaches(self, now: int) -> list[Breach]:
        limit = self.settings.connection_down_s
        out = []
        for component, (since, detail) in self._down_since.items():
            down_s = (now - since) / NS
            if down_s > limit:
                out.append(
                    (
                        f"connection:{component}",
                        "connection",
                        f"{component} down for {down_s:.0f}s (limit {limit:g}s): {detail}",
                    )
                )
        return out

    def _stale_breaches(self, now: int) -> list[Breach]:
        limit = self.settings.market_data_staleness_s
        out = []
        for pair, seen in self._last_seen.items():
            age_s = (now - seen) / NS
            if age_s > limit:
                out.append(
                    (
                        f"stale:{pair}",
                        "stale_data",
                        f"no market data for {pair} for {age_s:.0f}s (limit {limit:g}s)",
                    )
                )
        return out

    def _host_breaches(self, now: int) -> list[Breach]:
        s, sample = self.settings, self._probe()
        cpu, ram, disk = float(s.max_cpu_pct), float(s.max_ram_pct), float(s.min_disk_free_pct)
        readings = (
            ("cpu", sample.cpu_pct > cpu, f"CPU {sample.cpu_pct:.0f}% > {cpu:g}%"),
            ("ram", sample.ram_pct > ram, f"RAM {sample.ram_pct:.0f}% > {ram:g}%"),
            (
                "disk",
                sample.disk_free_pct < disk,
                f"free disk {sample.disk_free_pct:.1f}% < {disk:g}%",
            ),
        )
        out = []
        for name, over, text in readings:
            if not over:
                self._over_since.pop(name, None)
                continue
            since = self._over_since.setdefault(name, now)
            lasted = (now - since) / NS
            if lasted >= s.host_breach_s:
                out.append((f"host:{name}", "host", f"{text} for {lasted:.0f}s"))
        return out

    def _volatility_breaches(self, now: int) -> list[Breach]:
        window = self.settings.volatility_window_min
        limit = float(self.settings.max_volatility_pct)
        oldest = now - window * 60 * NS
        out = []
        for pair, samples in self._prices.items():
            while samples and samples[0][0] < oldest:
                samples.popleft()
            if len(samples) < 2:
                continue
            low = min(p for _, p in samples)
            high = max(p for _, p in samples)
            move = (high - low) / low * 100 if low > 0 else 0.0
            if move > limit:
                out.append(
                    (
                        f"volatility:{pair}",
                        "volatility",
                        f"{pair} moved {move:.2f}% ({low:g}..{high:g}) within {window} min "
                        f"(limit {limit:g}%)",
                    )
                )
        return out

    # --- events ----------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if isinstance(event, TradingStateChangedEvent):
            await self._on_state(event)
        elif isinstance(event, ExecutionReportEvent):
            await self._on_report(event)
        elif isinstance(event, PortfolioEvent):
            await self._on_portfolio(event.snapshot)
        elif isinstance(event, SystemStatusEvent):
            if event.component.startswith(WATCHED_COMPONENTS):
                self._component(event.component, event.state, event.detail)
        elif isinstance(event, FeedStatsEvent):
            self._on_feed(event)
        elif isinstance(event, CandleEvent):
            self._seen(event.pair)
            # a forming candle updates on every trade: one close a second is plenty
            self._sample(
                event.pair, float(event.close), every_ns=0 if event.closed else MID_SAMPLE_NS
            )

    def on_book(self, event: BookEvent) -> None:
        self._seen(event.pair)
        mid = event.mid()
        if mid is not None:
            self._sample(event.pair, float(mid), every_ns=MID_SAMPLE_NS)

    def _seen(self, pair: str) -> None:
        if pair in self._last_seen:
            self._last_seen[pair] = self._clock()

    def _sample(self, pair: str, price: float, *, every_ns: int) -> None:
        samples = self._prices.get(pair)
        if samples is None or price <= 0:
            return
        now = self._clock()
        if every_ns and samples and now - samples[-1][0] < every_ns:
            return
        samples.append((now, price))

    def _component(self, component: str, state: ComponentState, detail: str) -> None:
        if state in DOWN:
            if component not in self._down_since:
                self._down_since[component] = (self._clock(), f"{state.value}: {detail}")
        elif state in UP:
            self._down_since.pop(component, None)
        # STARTING / CONNECTING neither start nor end an outage

    def _on_feed(self, event: FeedStatsEvent) -> None:
        self._component(FEED_COMPONENT, event.state, event.last_disconnect_reason)
        now = self._clock()
        for pair, age_s in event.data_age_s:
            if pair in self._last_seen:
                self._last_seen[pair] = max(self._last_seen[pair], now - int(age_s * NS))

    async def _on_portfolio(self, snap: PortfolioSnapshot) -> None:
        found = [
            (f"risk:{kind}", "drawdown" if kind.endswith("drawdown") else kind, reason)
            for kind, reason in breaches(snap, self.risk_settings)
        ]
        await self._apply("risk", found)

    async def _on_report(self, r: ExecutionReportEvent) -> None:
        if r.status is OrderStatus.ACKNOWLEDGED:
            self.failed_in_a_row = 0
            return
        if r.status not in FAILED:
            return
        self.failed_in_a_row += 1
        reason = r.reason or r.status.value
        if any(marker in reason.lower() for marker in AUTH_MARKERS):
            await self._trigger(
                "auth", f"authentication failure on {r.pair} order {r.client_order_id}: {reason}"
            )
            return
        limit = self.settings.max_failed_placements
        if self.failed_in_a_row >= limit:
            count, self.failed_in_a_row = self.failed_in_a_row, 0
            await self._trigger(
                "api_errors",
                f"{count} failed order placements in a row "
                f"(limit {limit}); last: {r.status.value} {reason}",
            )

    async def _on_state(self, event: TradingStateChangedEvent) -> None:
        self.trading = event
        if event.state is not TradingState.REDUCING:
            self._halt_requested = False  # answered (HALTED), or overtaken by a resume
        if event.active:
            log.info("trading resumed by the operator", extra={"operator": event.source})
            self.failed_in_a_row = 0
        await self._publish_status()
        if event.halted and event.source != "operator" and not event.restored:
            await self._apply_policy(event.source)

    # --- breaches and HALT -----------------------------------------------------------------

    async def _apply(self, domain: str, found: list[Breach]) -> None:
        self._clear_if_absent(domain, [key for key, _, _ in found])
        for breach in found:
            await self._breach(breach)

    def _clear_if_absent(self, domain: str, keys: list[str] | tuple[str, ...]) -> None:
        for key in [k for k in self.active if k.startswith(domain + ":") and k not in keys]:
            log.info("breach cleared", extra={"breach": key, "was": self.active.pop(key)})

    async def _breach(self, breach: Breach) -> None:
        key, source, reason = breach
        if key in self.active:
            return  # already reported (or acknowledged by a resume)
        self.active[key] = reason
        await self._trigger(source, reason, key)

    async def _trigger(self, source: str, reason: str, key: str = "") -> None:
        """Ask for a HALT for ``reason`` unless already halted (then only log it)."""
        if self.halted:
            log.warning(
                "HALT condition while already halted: %s",
                reason,
                extra={"halt_source": source, "halt_reason": reason, "breach": key},
            )
            return
        self._halt_requested = True
        self.halts += 1
        log.error(
            "HALT: %s",
            reason,
            extra={
                "halt_source": source,
                "halt_reason": reason,
                "breach": key,
                "halt_policy": self.settings.halt_policy,
            },
        )
        await self._bus.publish(HaltEvent(reason, source, self._clock()))

    async def _apply_policy(self, source: str) -> None:
        if self.settings.halt_policy == "close":
            log.warning(
                "HALT policy close: flattening every position at market",
                extra={"halt_source": source},
            )
            await self._bus.publish(FlattenEvent(f"halt:{source}", self._clock()))

    def status_detail(self) -> str:
        t = self.trading
        if t.halted:
            return f"HALTED ({t.source}): {t.reason}"
        if t.reducing:
            return f"REDUCING ({t.cause}): exits only"
        return "ACTIVE"

    async def _publish_status(self) -> None:
        await self._bus.publish(
            SystemStatusEvent(self.NAME, _DISPLAY[self.state], self.status_detail(), self._clock())
        )
