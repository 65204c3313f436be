"""Kraken public REST client (aiohttp): AssetPairs, OHLC, Trades, Depth, Time.

Kraken answers HTTP 200 with ``{"error": [...], "result": {...}}``; a non-empty ``error`` is a
failure. Errors are mapped to exceptions whose names say what to do: retry later (rate limit,
unavailable) or fix the request (invalid arguments, unknown pair).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import aiohttp
import msgspec
import numpy as np

from gal_friday.candles import CandleSeries
from gal_friday.domain import InstrumentSpec
from gal_friday.kraken.symbols import pair_from_wsname, rest_altname

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(float_hook=str)


class KrakenError(Exception):
    """Kraken refused the request; ``errors`` are Kraken's own strings."""

    retryable = False

    def __init__(self, errors: list[str], method: str) -> None:
        self.errors = errors
        self.method = method
        super().__init__(f"{method}: {'; '.join(errors)}")


class KrakenRateLimited(KrakenError):
    retryable = True


class KrakenUnavailable(KrakenError):
    retryable = True


_RATE = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests", "EService:Throttled")
_DOWN = (
    "EService:Unavailable",
    "EService:Busy",
    "EGeneral:Internal error",
    "EService:Deadline elapsed",
)


def classify(errors: list[str], method: str) -> KrakenError:
    """The exception class that says what a caller can do about Kraken's error strings."""
    if any(e.startswith(_RATE) for e in errors):
        return KrakenRateLimited(errors, method)
    if any(e.startswith(_DOWN) for e in errors):
        return KrakenUnavailable(errors, method)
    return KrakenError(errors, method)


def _pow10(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def instrument_from_asset_pair(info: dict[str, Any]) -> InstrumentSpec:
    """An AssetPairs entry as a domain InstrumentSpec."""
    pp, qp = int(info["pair_decimals"]), int(info["lot_decimals"])
    return InstrumentSpec(
        pair=pair_from_wsname(str(info["wsname"])),
        price_precision=pp,
        qty_precision=qp,
        price_increment=Decimal(str(info.get("tick_size") or _pow10(pp))),
        qty_increment=_pow10(qp),
        qty_min=Decimal(str(info.get("ordermin", "0"))),
        cost_min=Decimal(str(info.get("costmin", "0"))),
        status=str(info.get("status", "online")),
    )


class RestSession:
    """One aiohttp session per client, opened on first use and closed with the client."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


class KrakenPublicRest(RestSession):
    """Public REST calls."""

    async def call(self, method: str, params: dict[str, str] | None = None) -> Any:
        """GET ``/0/public/<method>``; returns ``result`` or raises a KrakenError."""
        url = f"{self.base_url}/0/public/{method}"
        try:
            async with self.http().get(url, params=params or {}) as resp:
                body = await resp.read()
                if resp.status == 429:  # Kraken's edge throttles with a plain HTTP 429
                    raise KrakenRateLimited([f"HTTP {resp.status}"], method)
                if resp.status >= 500:
                    raise KrakenUnavailable([f"HTTP {resp.status}"], method)
                if resp.status >= 400:
                    raise KrakenError([f"HTTP {resp.status}"], method)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KrakenUnavailable([f"{type(exc).__name__}: {exc}"], method) from None
        try:
            payload = _decoder.decode(body)
            errors = payload.get("error") or []
        except (msgspec.DecodeError, AttributeError):
            raise KrakenUnavailable(["response is not Kraken JSON"], method) from None
        if errors:
            raise classify([str(e) for e in errors], method)
        return payload["result"]

    async def server_time(self) -> int:
        result = await self.call("Time")
        return int(result["unixtime"])

    async def asset_pairs(self, pairs: tuple[str, ...]) -> dict[str, InstrumentSpec]:
        """Tick size, lot decimals and minimums for the given domain pairs."""
        result = await self.call("AssetPairs", {"pair": ",".join(rest_altname(p) for p in pairs)})
        specs = {}
        for info in result.values():
            spec = instrument_from_asset_pair(info)
            specs[spec.pair] = spec
        missing = [p for p in pairs if p not in specs]
        if missing:
            raise KrakenError([f"EQuery:Unknown asset pair {', '.join(missing)}"], "AssetPairs")
        return specs

    async def ohlc(
        self, pair: str, interval_min: int = 1, since: int | None = None
    ) -> tuple[list[list[Any]], int]:
        """Rows ``[time, open, high, low, close, vwap, volume, count]`` and the next ``since``."""
        params = {"pair": rest_altname(pair), "interval": str(interval_min)}
        if since is not None:
            params["since"] = str(since)
        result = await self.call("OHLC", params)
        return _rows(result), int(result.get("last", 0))

    async def recent_candles(self, pair: str, interval_min: int = 1) -> CandleSeries:
        """The closed candles OHLC returns (up to 720; its last row is still open, dropped)."""
        rows, _ = await self.ohlc(pair, interval_min)
        closed = rows[:-1]

        def col(i: int) -> np.ndarray:
            return np.array([float(r[i]) for r in closed], dtype=np.float64)

        return CandleSeries(
            np.array([int(r[0]) for r in closed], dtype=np.int64),
            col(1),
            col(2),
            col(3),
            col(4),
            col(6),
            np.array([int(r[7]) for r in closed], dtype=np.int64),
        )

    async def trades(
        self, pair: str, since: int | None = None, count: int = 1000
    ) -> tuple[list[list[Any]], int]:
        """Rows ``[price, volume, time, side, type, misc, trade_id]`` and the next ``since``."""
        params = {"pair": rest_altname(pair), "count": str(count)}
        if since is not None:
            params["since"] = str(since)
        result = await self.call("Trades", params)
        return _rows(result), int(result.get("last", 0))

    async def depth(self, pair: str, count: int = 10) -> dict[str, list[list[Any]]]:
        result = await self.call("Depth", {"pair": rest_altname(pair), "count": str(count)})
        book: dict[str, list[list[Any]]] = next(iter(result.values()))
        return book


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    """The one list-valued entry of an OHLC/Trades result (keyed by Kraken's pair id)."""
    for key, value in result.items():
        if key != "last" and isinstance(value, list):
            return value
    return []
