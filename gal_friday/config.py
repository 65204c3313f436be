"""ConfigurationManager: every parameter in one validated, immutable object.

Precedence, highest first: CLI flags, environment variables (``GAL_FRIDAY_`` prefix, ``__``
between nesting levels, e.g. ``GAL_FRIDAY_KRAKEN__BOOK_DEPTH=25``), the TOML file
(``config.toml`` or ``--config PATH``), then the defaults below, which ``config.toml``
documents line by line.

API credentials come only from ``KRAKEN_API_KEY`` / ``KRAKEN_API_SECRET`` in the environment,
are held as ``SecretStr`` and never appear in a repr, a log line or a file.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG = Path("config.toml")

PositiveFloat = Annotated[float, Field(gt=0)]
Percent = Annotated[Decimal, Field(ge=0, le=100)]


class ConfigError(Exception):
    """A user mistake in configuration; its message is one line meant for the user."""


def _check_pair(pair: str) -> None:
    """Refuse a name that cannot be a pair (a typo would otherwise configure nothing)."""
    base, slash, quote = pair.partition("/")
    if not (slash and base.isalnum() and quote.isalnum() and pair == pair.upper()):
        raise ValueError(f"{pair!r} is not a pair like 'XRP/USD'")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StalenessSettings(_Section):
    """Seconds without a message on a channel for one pair before the connection is recycled.
    0 disables the watchdog for that channel (trades may legitimately pause)."""

    book: Annotated[float, Field(ge=0)] = 30.0
    ohlc: Annotated[float, Field(ge=0)] = 180.0
    trade: Annotated[float, Field(ge=0)] = 0.0


class KrakenSettings(_Section):
    ws_public_url: str = "wss://ws.kraken.com/v2"
    ws_private_url: str = "wss://ws-auth.kraken.com/v2"
    rest_url: str = "https://api.kraken.com"
    book_depth: Literal[10, 25, 100, 500, 1000] = 10
    ohlc_interval_min: Literal[1, 5, 15, 30, 60, 240, 1440] = 1
    connect_timeout_s: PositiveFloat = 10.0
    request_timeout_s: PositiveFloat = 10.0
    silence_limit_s: PositiveFloat = 10.0
    reconnect_initial_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 60.0
    reconnect_jitter: Annotated[float, Field(ge=0, le=1)] = 0.5
    staleness_s: StalenessSettings = StalenessSettings()


class RiskSettings(_Section):
    max_total_drawdown_pct: Percent = Decimal("15")
    max_daily_drawdown_pct: Percent = Decimal("2")
    max_weekly_drawdown_pct: Percent = Decimal("5")
    max_consecutive_losses: Annotated[int, Field(ge=1)] = 5
    risk_per_trade_pct: Annotated[Decimal, Field(gt=0, le=5)] = Decimal("0.5")
    max_asset_exposure_pct: Percent = Decimal("10")
    max_total_exposure_pct: Percent = Decimal("25")
    max_order_value_usd: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    fat_finger_pct: Percent = Decimal("5")


class StrategySettings(_Section):
    buy_threshold: Annotated[float, Field(gt=0.5, lt=1)] = 0.65
    sell_threshold: Annotated[float, Field(gt=0, lt=0.5)] = 0.35
    confirm_momentum: bool = True
    momentum_feature: str = "roc_5_pct"
    stop_mode: Literal["percent", "atr"] = "percent"
    stop_loss_pct: Annotated[Decimal, Field(gt=0, lt=50)] = Decimal("0.5")
    take_profit_pct: Annotated[Decimal, Field(gt=0, lt=100)] = Decimal("1.0")
    atr_feature: str = "atr_14"
    atr_stop_mult: Annotated[Decimal, Field(gt=0)] = Decimal("1.5")
    atr_take_profit_mult: Annotated[Decimal, Field(gt=0)] = Decimal("3")
    min_edge_pct: Annotated[Decimal, Field(ge=0)] = Decimal("0.1")
    max_holding_min: Annotated[float, Field(ge=0)] = 60.0
    exit_on_reversal: bool = True


class TrainingSettings(_Section):
    threshold_pct: Annotated[float, Field(gt=0)] = 0.1
    horizon_min: Annotated[int, Field(ge=1, le=240)] = 5
    folds: Annotated[int, Field(ge=2, le=20)] = 4  # fold 0 only warms calibration up
    window: Literal["expanding", "rolling"] = "expanding"
    min_auc: Annotated[float, Field(ge=0, le=1)] = 0.52
    # out-of-sample Brier skill over climatology must exceed this margin (a fraction, not %);
    # "off" (None) accepts a model without skill (experiments on the simulator's market)
    min_brier_skill: Annotated[float, Field(ge=0, le=0.5)] | None = 0.002
    max_brier: Annotated[float, Field(gt=0, le=1)] = 1.0  # optional absolute ceiling
    rounds: Annotated[int, Field(ge=1)] = 200
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    num_leaves: Annotated[int, Field(ge=2)] = 31
    min_data_in_leaf: Annotated[int, Field(ge=1)] = 50
    history_days: Annotated[float, Field(gt=0)] = 90.0

    @field_validator("min_brier_skill", mode="before")
    @classmethod
    def _skill_floor_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "off" else value


class PredictionSettings(_Section):
    models: tuple[str, ...] = ("models/default",)
    weights: tuple[float, ...] = ()
    combine: Literal["mean", "vote"] = "mean"
    workers: Annotated[int, Field(ge=1, le=16)] = 1
    sim_demo_model: bool = True


class PaperSettings(_Section):
    initial_cash_usd: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    latency_ms: Annotated[float, Field(ge=0)] = 50.0
    slippage_bps: Annotated[Decimal, Field(ge=0)] = Decimal("2")


class ExecutionSettings(_Section):
    entry_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    entry_timeout_action: Literal["cancel", "market"] = "cancel"
    protective_orders: bool = True
    busy_retries: Annotated[int, Field(ge=0)] = 3
    busy_retry_s: PositiveFloat = 1.0
    cancel_wait_s: PositiveFloat = 5.0
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_reset_s: PositiveFloat = 30.0
    dead_man_switch_s: Annotated[int, Field(ge=0, lt=86400)] = 60
    dead_man_interval_s: PositiveFloat = 20.0
    reconcile_interval_s: Annotated[float, Field(ge=0)] = 60.0
    orphan_orders: Literal["adopt", "cancel"] = "adopt"
    shutdown_wait_s: Annotated[float, Field(ge=0)] = 10.0


class FeeSettings(_Section):
    maker_pct: Percent = Decimal("0.25")
    taker_pct: Percent = Decimal("0.40")


class MonitoringSettings(_Section):
    market_data_staleness_s: PositiveFloat = 60.0
    status_interval_s: PositiveFloat = 5.0
    check_interval_s: PositiveFloat = 1.0
    halt_policy: Literal["close", "keep"] = "close"
    connection_down_s: PositiveFloat = 30.0
    max_failed_placements: Annotated[int, Field(ge=1)] = 3
    volatility_window_min: Annotated[int, Field(ge=1)] = 5
    max_volatility_pct: Percent = Decimal("5")
    max_cpu_pct: Percent = Decimal("95")
    max_ram_pct: Percent = Decimal("95")
    min_disk_free_pct: Percent = Decimal("2")
    host_breach_s: PositiveFloat = 60.0


class StoreSettings(_Section):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    sqlite_file: str = "gal-friday.sqlite3"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/gal_friday"
    queue_size: Annotated[int, Field(ge=100)] = 10_000
    spill_file: str = "audit-spill.jsonl"
    retry_s: PositiveFloat = 5.0


class TimeseriesSettings(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "gal-friday"
    bucket: str = "gal-friday"
    token_env: str = "INFLUXDB_TOKEN"
    batch_size: Annotated[int, Field(ge=1)] = 500
    flush_interval_s: PositiveFloat = 1.0
    queue_size: Annotated[int, Field(ge=100)] = 50_000


HalfSpreadBps = Annotated[Decimal, Field(ge=0, le=500)]  # above 5 % is a typo, not a market


class BacktestSettings(_Section):
    """How a backtest prices what candles do not say: the spread, queue and intrabar order
    (config.toml gives the measured defaults and their sources)."""

    initial_capital_usd: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    report_dir: str = "reports"
    risk_free_rate_pct: Annotated[Decimal, Field(ge=0)] = Decimal("0")
    intrabar: Literal["pessimistic", "path"] = "pessimistic"
    baseline_seeds: Annotated[int, Field(ge=0)] = 200
    half_spread_bps: dict[str, HalfSpreadBps] = Field(
        default_factory=lambda: {"XRP/USD": Decimal("1"), "DOGE/USD": Decimal("1")}
    )
    queue_share: Annotated[Decimal, Field(ge=0, le=1)] = Decimal("1")

    @field_validator("half_spread_bps")
    @classmethod
    def _spreads_of_pairs(cls, spreads: dict[str, Decimal]) -> dict[str, Decimal]:
        for pair in spreads:
            _check_pair(pair)
        return spreads

    def half_spread_for(self, pair: str) -> Decimal | None:
        """The pair's half-spread in basis points of the price; None for a pair not listed
        (its book is one tick either side of the price, the narrowest there is)."""
        return self.half_spread_bps.get(pair)


class SimSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    seed: int = 7
    replay: str = ""
    speed: Annotated[float, Field(ge=0)] = 1.0
    messages_per_second: PositiveFloat = 20.0
    initial_usd: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    latency_ms: Annotated[float, Field(ge=0)] = 20.0


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str = "logs/gal-friday.jsonl"
    max_bytes: Annotated[int, Field(ge=1024)] = 20_000_000
    backup_count: Annotated[int, Field(ge=0)] = 10
    stdout: bool = True
    session_journal: bool = True


class PathsSettings(_Section):
    data_dir: str = "data"


Period = Annotated[int, Field(ge=1, le=10_000)]


class FeatureSettings(_Section):
    """Indicator and book-feature parameters; periods and windows count 1-min candles.
    Feature names carry their parameters, so a model trained with other values is refused."""

    rsi_period: Period = 14
    macd_fast: Period = 12
    macd_slow: Period = 26
    macd_signal: Period = 9
    bb_period: Annotated[int, Field(ge=2, le=10_000)] = 20
    bb_k: PositiveFloat = 2.0
    vwap_window: Period = 30
    roc_lookbacks: tuple[Period, ...] = (1, 5, 15)
    atr_period: Period = 14
    volatility_window: Annotated[int, Field(ge=2, le=10_000)] = 30
    book_levels: tuple[Annotated[int, Field(ge=1, le=1000)], ...] = (5, 10)
    max_candle_age_s: Annotated[float, Field(ge=0)] = 60.0

    @field_validator("roc_lookbacks", "book_levels")
    @classmethod
    def _distinct(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(values)) != len(values):
            raise ValueError("a value is listed twice")
        return values

    @model_validator(mode="after")
    def _fast_below_slow(self) -> FeatureSettings:
        if self.macd_fast >= self.macd_slow:
            raise ValueError("macd_fast must be smaller than macd_slow")
        return self


class Credentials(BaseSettings):
    """Kraken API key and secret, from the environment only."""

    model_config = SettingsConfigDict(env_prefix="KRAKEN_", extra="ignore", frozen=True)

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @field_validator("api_secret")
    @classmethod
    def _secret_is_base64(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                base64.b64decode(value.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("KRAKEN_API_SECRET is not valid base64") from None
        return value

    @property
    def present(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


_toml_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "toml", default=None
)


class _TomlDataSource(PydanticBaseSettingsSource):
    """The already-parsed TOML file, below the environment in precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get() or {})


class Settings(BaseSettings):
    """The whole configuration; see config.toml for what each value means."""

    model_config = SettingsConfigDict(
        env_prefix="GAL_FRIDAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    exchange: Literal["kraken", "sim"] = "kraken"
    mode: Literal["paper", "live"] = "paper"
    pairs: tuple[str, ...] = ("XRP/USD", "DOGE/USD")
    kraken: KrakenSettings = KrakenSettings()
    strategy: StrategySettings = StrategySettings()
    training: TrainingSettings = TrainingSettings()
    prediction: PredictionSettings = PredictionSettings()
    risk: RiskSettings = RiskSettings()
    paper: PaperSettings = PaperSettings()
    execution: ExecutionSettings = ExecutionSettings()
    fees: FeeSettings = FeeSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    store: StoreSettings = StoreSettings()
    timeseries: TimeseriesSettings = TimeseriesSettings()
    backtest: BacktestSettings = BacktestSettings()
    sim: SimSettings = SimSettings()
    logging: LoggingSettings = LoggingSettings()
    paths: PathsSettings = PathsSettings()
    features: FeatureSettings = FeatureSettings()

    _credentials: Credentials = PrivateAttr(default_factory=Credentials.model_construct)

    @field_validator("pairs")
    @classmethod
    def _pairs_look_like_pairs(cls, pairs: tuple[str, ...]) -> tuple[str, ...]:
        if not pairs:
            raise ValueError("at least one pair is needed")
        for pair in pairs:
            _check_pair(pair)
        if len(set(pairs)) != len(pairs):
            raise ValueError("a pair is listed twice")
        return pairs

    @property
    def credentials(self) -> Credentials:
        return self._credentials

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlDataSource(settings_cls)


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the Settings from file, environment and ``overrides`` (CLI), or raise ConfigError.

    ``path`` None means ``./config.toml`` when it exists, else the built-in defaults; an
    explicit path that does not exist is an error.
    """
    data = _read_toml(path)
    token = _toml_data.set(data)
    try:
        settings = Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path or DEFAULT_CONFIG)) from None
    finally:
        _toml_data.reset(token)
    settings._credentials = load_credentials()
    return settings


def load_credentials() -> Credentials:
    """KRAKEN_API_KEY / KRAKEN_API_SECRET; errors never echo the value."""
    try:
        return Credentials(_env_file=None)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"credentials: {err['msg'].removeprefix('Value error, ')}") from None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return {}
        path = DEFAULT_CONFIG
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _describe(exc: ValidationError, path: Path) -> str:
    """One line naming the first bad field, what is wrong, and where settings come from."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown setting"
    elif "input" in err and not isinstance(err["input"], dict):
        message = f"{message} (got {err['input']!r})"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config error: {field}: {message}{more} [from {path}, GAL_FRIDAY_* or flags]"


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``'kraken.book_depth', 25`` -> ``{'kraken': {'book_depth': 25}}``."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def merge_overrides(*items: tuple[str, Any]) -> dict[str, Any]:
    """Fold dotted ``(key, value)`` pairs into the nested dict pydantic expects."""
    merged: dict[str, Any] = {}
    for key, value in items:
        _deep_merge(merged, _nested(key, value))
    return merged


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
