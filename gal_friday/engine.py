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
from gal_friday.events import PortfolioEvent, TradingStartedEvent, now_ns
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
from gal_friday.recovery import recover
from gal_friday.risk import RiskManager
from gal_friday.session import SessionRecorder
from gal_friday.store import for_run as store_for_run
from gal_friday.store import make_store
from gal_friday.store.audit import AuditWriter
from gal_friday.store.base import Store
from gal_friday.timeseries import TimeSeriesWriter
from gal_friday.wiring import TradingModules, build_trading

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
        self.audit.attach()
        await self.audit.start()
        trading = self._trading_venue(venue)
        cash = s.paper.initial_cash_usd
        if s.mode == "live":
            cash = (await trading.balances()).get("USD", Decimal(0))
        self.modules = build_trading(s, self.bus, trading, cash=cash, journal=self.audit)
        self.portfolio, self.risk = self.modules.portfolio, self.modules.risk
        self.execution = self.modules.execution
        await self.modules.start()
        await self.bus.publish(TradingStartedEvent(s.mode, cash, now_ns()))
        await self._start_monitoring()
        if s.mode == "live":
            await recover(s, self.store, trading, self.execution, self.bus)
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

    async def _start_monitoring(self) -> None:
        s = self.settings
        self.monitoring = MonitoringService(s, self.bus)
        self.monitoring.attach()
        await self.monitoring.start()
        if s.timeseries.enabled:
            self.timeseries = TimeSeriesWriter(s, self.bus, tags={"mode": s.mode})
            self.timeseries.attach()
            await self.timeseries.start()

    async def _stop_trading(self) -> None:
        """After the bus has stopped: flush the audit and time series, close the store."""
        if self.modules is not None:
            await self.modules.stop()
        if self.monitoring is not None:
            await self.monitoring.stop()
        if self.timeseries is not None:
            await self.timeseries.stop()
        if self.audit is not None:
            await self.audit.stop()
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
