"""The trading engine: the bus and the modules, wired for one run.

The same engine runs under ``--no-ui`` and, later, under the Textual cockpit: a user
interface is just one more subscriber of the bus. With ``exchange = "sim"`` the built-in
Kraken-protocol simulator is started in-process on loopback and the real Kraken client code
talks to it over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pydantic import SecretStr

from gal_friday.bus import EventBus
from gal_friday.config import Credentials, Settings
from gal_friday.events import (
    PortfolioEvent,
    TradingStartedEvent,
    TradingState,
    TradingStateChangedEvent,
    now_ns,
)
from gal_friday.execution.handler import ExecutionHandler
from gal_friday.execution.paper import PaperVenue
from gal_friday.execution.venue import TradingVenue
from gal_friday.features import FeatureEngine
from gal_friday.folders import make_folder
from gal_friday.ingest import DataIngestor
from gal_friday.kraken.rest import KrakenError
from gal_friday.kraken.ws import RawSink
from gal_friday.monitoring import MonitoringService
from gal_friday.portfolio import PortfolioManager
from gal_friday.prediction.pipeline import ensure_demo_model
from gal_friday.prediction.service import PredictionService, load_models
from gal_friday.recovery import recover, recover_paper
from gal_friday.risk import RiskManager
from gal_friday.session import SessionRecorder
from gal_friday.store import for_run as store_for_run
from gal_friday.store import make_store
from gal_friday.store.audit import AuditWriter
from gal_friday.store.base import Store, StoreUnavailable
from gal_friday.store.memory import account_of, portfolio_memory, remembered_state
from gal_friday.timeseries import TimeSeriesWriter
from gal_friday.wiring import Component, Remembered, TradingModules, build_trading

log = logging.getLogger(__name__)
_DRAIN_S = 5.0  # at a stop, how long the bus may take to hand the journal what it holds


@dataclass(frozen=True, slots=True)
class Venue:
    """Where market data comes from and where live orders go for this run."""

    name: str
    ws_public_url: str
    rest_url: str
    ws_private_url: str
    credentials: Credentials

    def __repr__(self) -> str:  # never show the credentials
        return f"Venue(name={self.name!r}, rest_url={self.rest_url!r})"


@contextlib.asynccontextmanager
async def open_venue(settings: Settings) -> AsyncIterator[Venue]:
    """Kraken itself, or an in-process simulator serving Kraken's protocols on loopback (with a
    freshly generated API key registered, so live order routing needs no real keys there)."""
    k = settings.kraken
    if settings.exchange == "kraken":
        yield Venue("kraken", k.ws_public_url, k.rest_url, k.ws_private_url, settings.credentials)
        return
    from gal_friday.sim.server import open_sim_exchange

    async with open_sim_exchange(
        settings.sim,
        settings.pairs,
        maker_fee_pct=settings.fees.maker_pct,
        taker_fee_pct=settings.fees.taker_pct,
    ) as sim:
        key, secret = (
            f"sim-{secrets.token_hex(8)}",
            base64.b64encode(secrets.token_bytes(64)).decode(),
        )
        sim.private.add_key(key, secret)
        log.info("simulator started", extra={"ws_url": sim.ws_url, "rest_url": sim.rest_url})
        yield Venue(
            "sim",
            sim.ws_url,
            sim.rest_url,
            sim.ws_auth_url,
            Credentials(api_key=SecretStr(key), api_secret=SecretStr(secret)),
        )


_NO_KEYS = (
    "--mode live needs KRAKEN_API_KEY and KRAKEN_API_SECRET in the environment (a key "
    "with the trading and WebSocket permissions); refusing to start"
)


class LiveModeError(Exception):
    """Live trading cannot start (missing keys, venue refused us); the message says why."""


class Engine:
    """Owns the bus and the running modules."""

    def __init__(
        self, settings: Settings, *, raw_sink: RawSink | None = None, predict: bool = True
    ) -> None:
        if (
            settings.mode == "live"
            and settings.exchange == "kraken"
            and not settings.credentials.present
        ):
            raise LiveModeError(_NO_KEYS)
        self.settings = settings
        self.bus = EventBus()
        self.raw_sink = raw_sink
        self.predict = predict
        self.ingestor: DataIngestor | None = None
        self.features: FeatureEngine | None = None
        self.prediction: PredictionService | None = None
        self.portfolio: PortfolioManager | None = None
        self.risk: RiskManager | None = None
        self.execution: ExecutionHandler | None = None
        self.session: SessionRecorder | None = None
        self.store: Store | None = None
        self.audit: AuditWriter | None = None
        self.monitoring: MonitoringService | None = None
        self.timeseries: TimeSeriesWriter | None = None
        self.modules: TradingModules | None = None
        self._started: list[Component] = []  # in start order; stopped in reverse
        self._retry: asyncio.Task[None] | None = None  # a recovery waiting for the store

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set or a module fails for good, serving the local control
        socket (``gal-friday halt|resume|flatten|status``) for the whole run."""
        from gal_friday.control import ControlServer

        async with ControlServer(self.bus, self.settings):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        async with open_venue(self.settings) as venue:
            self.ingestor = DataIngestor(
                self.settings,
                self.bus,
                ws_url=venue.ws_public_url,
                rest_url=venue.rest_url,
                raw_sink=self.raw_sink,
            )
            try:
                if self.predict:
                    self.features = FeatureEngine(self.settings.features, self.bus)
                    self.features.attach()
                    self.prediction = await self._start_prediction(venue, self.features.names)
                    await self._prime(self.ingestor, self.features)
                    await self._start_trading(venue)
                self.bus.start()
                await self._run_until(stop, self.ingestor)
            finally:
                if self.execution is not None:  # while the bus still carries its reports
                    await self.execution.wind_down(self.settings.execution.shutdown_wait_s)
                if self.portfolio is not None:  # the store's positions as the run ends
                    await self.bus.publish(PortfolioEvent(self.portfolio.snapshot()))
                journal = self.session.subscription if self.session is not None else None
                await self.bus.stop(finish=journal, timeout_s=_DRAIN_S)  # the journal gets all
                await self._stop_trading()
                if self.prediction is not None:
                    await self.prediction.stop()
                if self.session is not None:
                    self.session.close()

    async def _run_until(self, stop: asyncio.Event, ingestor: DataIngestor) -> None:
        ingest = asyncio.create_task(ingestor.run(), name="engine:ingest")
        stopper = asyncio.create_task(stop.wait(), name="engine:stop")
        snapshots = asyncio.create_task(self._publish_portfolio(), name="engine:portfolio")
        try:
            await asyncio.wait({ingest, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ingest, stopper, snapshots):
                task.cancel()
            results = await asyncio.gather(ingest, stopper, snapshots, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def _start_prediction(self, venue: Venue, features: tuple[str, ...]) -> PredictionService:
        """Load the configured models; on the simulator with none trained, a demo model."""
        cfg = self.settings.prediction
        dirs = [Path(d) for d in cfg.models]
        if (
            venue.name == "sim"
            and cfg.sim_demo_model
            and not any((d / "model.json").is_file() for d in dirs)
        ):
            dirs = [await ensure_demo_model(self.settings, venue.rest_url)]
            weights: tuple[float, ...] = ()
        else:
            weights = cfg.weights
        models = load_models(dirs, weights or None, features)
        service = PredictionService(self.bus, models, how=cfg.combine, workers=cfg.workers)
        await service.start()
        return service

    async def _start_trading(self, venue: Venue) -> None:
        """Audit, then the trading modules (``wiring.build_trading``: portfolio, risk,
        strategy, execution) on this run's trading venue (the paper matching engine, or the
        exchange's private API), then monitoring. A live start recovers first: nothing may
        enter before the bot knows what it owns (the bus starts only after this returns)."""
        s = self.settings
        if s.logging.session_journal:
            models = self.prediction.model_id if self.prediction else ""
            self.session = SessionRecorder(s, models=(models,))
            self.session.attach(self.bus)
        run = store_for_run(s)
        self.store = make_store(run)
        self.audit = AuditWriter(self.store, run, self.bus)
        await self._launch(self.audit)
        trading = self._trading_venue(venue)
        memory = await self._remembered()
        cash = s.paper.initial_cash_usd
        if s.mode == "live":
            cash = (await trading.balances()).get("USD", Decimal(0))
        elif isinstance(trading, PaperVenue) and memory.portfolio and memory.portfolio.last:
            cash = memory.portfolio.last.cash  # the paper account carries on
            trading.restore_account(account_of(memory.portfolio))
        self.modules = build_trading(
            s, self.bus, trading, cash=cash, journal=self.audit, memory=memory
        )
        self.portfolio, self.risk = self.modules.portfolio, self.modules.risk
        self.execution = self.modules.execution
        await self._launch(self.modules, attached=True)
        await self.bus.publish(TradingStartedEvent(s.mode, cash, now_ns()))
        await self._start_monitoring()
        if s.mode == "paper" and memory.portfolio and memory.portfolio.last:
            await recover_paper(s, self.store, trading, self.execution, self.bus)
        if s.mode == "live":
            result = await recover(s, self.store, trading, self.execution, self.bus)
            if result.store_away:
                self._retry = asyncio.create_task(
                    self._recover_when_the_store_answers(trading), name="engine:recovery"
                )
        log.info(
            "trading",
            extra={
                "mode": s.mode.upper(),
                "venue": trading.name,
                "exchange": venue.name,
                "cash_usd": str(cash),
            },
        )
        if s.mode == "live":
            where = "the SIMULATOR" if venue.name == "sim" else "KRAKEN, WITH REAL MONEY"
            log.warning(f"LIVE TRADING: orders go to {where}", extra={"mode": "LIVE"})

    async def _recover_when_the_store_answers(self, venue: TradingVenue) -> None:
        """A recovery that failed because the store was away runs again once the store
        answers and the audit has written what it spilled meanwhile, so every fill is booked
        and every position gets its own round trip's brackets. The HALT stays for an
        operator to resume."""
        assert self.store is not None and self.audit is not None
        assert self.execution is not None
        while True:
            await asyncio.sleep(self.settings.store.retry_s)
            try:
                await self.store.fetch("SELECT 1")
            except StoreUnavailable:
                continue
            if not self.audit.db_available or self.audit.spill.pending:
                continue
            result = await recover(self.settings, self.store, venue, self.execution, self.bus)
            if result.ok:
                log.warning(
                    "crash recovery completed now that the store answers; trading stays "
                    "HALTED until an operator resumes"
                )
            if not result.store_away:
                return

    async def _remembered(self) -> Remembered:
        """What the earlier runs on this store left: the portfolio's baselines and open
        round trips, and a HALT or REDUCING still in force. A live start whose store cannot
        answer stays HALTED (the limits it would trade under are unknown)."""
        assert self.store is not None
        try:
            return Remembered(
                await portfolio_memory(self.store),
                await remembered_state(self.store),
                cash=self.settings.mode == "paper",
            )
        except StoreUnavailable as exc:
            log.error(
                "the audit store could not be read at start: earlier HALTs and risk limits "
                "are unknown",
                extra={"error": str(exc)},
            )
            if self.settings.mode != "live":
                return Remembered()
            reason = f"audit store unreadable at start ({exc}): earlier HALTs and limits unknown"
            return Remembered(
                trading=TradingStateChangedEvent(
                    TradingState.HALTED, TradingState.HALTED, reason, "store", now_ns(), True
                )
            )

    async def _start_monitoring(self) -> None:
        s = self.settings
        self.monitoring = MonitoringService(s, self.bus)
        await self._launch(self.monitoring)
        if s.timeseries.enabled:
            self.timeseries = TimeSeriesWriter(s, self.bus, tags={"mode": s.mode})
            await self._launch(self.timeseries)

    async def _launch(self, component: Component, *, attached: bool = False) -> None:
        """Every component of a run the same way (``wiring.Component``): attach (before the
        bus starts, so it misses nothing), start, and be stopped in reverse order."""
        if not attached:
            component.attach()
        await component.start()
        self._started.append(component)

    async def _stop_trading(self) -> None:
        """After the bus has stopped: every started component in reverse order (the trading
        modules, then monitoring and the time series, the audit last so it flushes what they
        said), then the store."""
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        while self._started:
            await self._started.pop().stop()
        if self.store is not None:
            await self.store.close()

    def _trading_venue(self, venue: Venue) -> TradingVenue:
        s = self.settings
        if s.mode == "paper":
            paper = PaperVenue(s.paper, s.fees)
            paper.attach(self.bus)
            return paper
        if not venue.credentials.present:
            raise LiveModeError(_NO_KEYS)
        from gal_friday.kraken.auth import NonceSource
        from gal_friday.kraken.trading import KrakenTradingVenue

        x = s.execution
        nonce_state = Path(s.paths.data_dir) / f"nonce-{venue.name}.state"
        make_folder(nonce_state.parent, "data folder")
        return KrakenTradingVenue(
            s.kraken,
            venue.credentials,
            pairs=s.pairs,
            nonce=NonceSource(nonce_state),
            ws_url=venue.ws_private_url,
            rest_url=venue.rest_url,
            breaker_fail_max=x.breaker_failures,
            breaker_reset_s=x.breaker_reset_s,
            dms_timeout_s=x.dead_man_switch_s,
            dms_interval_s=x.dead_man_interval_s,
        )

    async def _publish_portfolio(self, interval_s: float = 0.25) -> None:
        """Publish the portfolio for display and monitoring when it changed, at most every
        ``interval_s`` (the snapshot is cached until the next change, so identity is enough)."""
        last = None
        while True:
            await asyncio.sleep(interval_s)
            if self.portfolio is None:
                continue
            snap = self.portfolio.snapshot()
            if snap is not last:
                last = snap
                await self.bus.publish(PortfolioEvent(snap))

    async def _prime(self, ingestor: DataIngestor, features: FeatureEngine) -> None:
        """Warm the indicators from REST history so predictions start within a minute."""
        for pair in self.settings.pairs:
            try:
                features.prime(pair, await ingestor.recent_candles(pair))
            except KrakenError as exc:
                log.warning(
                    "could not warm features from history; they warm up live",
                    extra={"pair": pair, "error": str(exc)},
                )
