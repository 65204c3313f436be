"""Kraken's history formats and its Trades paging, for ``gal_friday.download``.

* **File formats.** Kraken's downloadable history comes as OHLCVT CSV files
  (``time,open,high,low,close,volume,count``, no header, named like ``XBTUSD_60.csv``) and
  trades CSV files (``time,price,volume``, named like ``XBTUSD.csv``). ``read_ohlcvt`` and
  ``read_trades`` validate them line by line and yield exact values; ``detect_kind``,
  ``check_file_pair`` and ``file_interval`` read what a file's shape and name say. The
  download's working file is the trades layout with the trade id as a fourth column.
* **Paging.** Kraken's ``OHLC`` endpoint returns only the last 720 candles, so history is
  paged through the public ``Trades`` endpoint (``since`` = the nanosecond cursor Kraken
  returns as ``last``): ``TradesPager`` paces the calls, retries throttling and outages with
  backoff and turns any other refusal into a one-line ``DownloadError``; ``new_prints`` checks
  a page's rows and drops those an overlapping page repeats.

Aggregating prints into candles is not Kraken's business and lives in ``gal_friday.candles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import re
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gal_friday.candles import MINUTE, CandleRow, Trade, decimal_text
from gal_friday.kraken.rest import (
    KrakenError,
    KrakenPublicRest,
    KrakenRateLimited,
    KrakenUnavailable,
)
from gal_friday.kraken.symbols import rest_altname

log = logging.getLogger("gal_friday.download")  # log lines keep the download's logger name

DAY = 86_400
PAGE_SIZE = 1000  # Kraken's maximum ``count`` for Trades
_MAX_BACKOFF_S = 60.0
_MAX_THROTTLE_S = 600.0
OHLCVT_NAME = re.compile(r"^([A-Za-z0-9]+)_(\d+)\.csv$")
_TRADES_NAME = re.compile(r"^([A-Za-z0-9]+)\.csv$")


class DownloadError(Exception):
    """A download or import that cannot go on; ``str()`` is one line meant for the user."""


class HistoryFileError(DownloadError):
    """A history file that is not what it should be; the message names the file and line."""


def default_output(data_dir: Path, pair: str, interval_min: int = 1) -> Path:
    """``data/XRPUSD_1.csv``: Kraken's own file naming, so its files and ours are one set."""
    return data_dir / f"{rest_altname(pair)}_{interval_min}.csv"


def _decimal(text: str) -> Decimal | None:
    """A finite non-negative number, or None: the one gate every price, volume and time
    passes through, whether it came from Kraken's API or from a file."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


# --- Kraken's history files ------------------------------------------------------------------


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV rows with their 1-based line numbers; unreadable files as one-line errors."""
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            try:
                for row in reader:
                    if len(row) > 1 or (row and row[0].strip()):
                        yield reader.line_num, row
            except csv.Error as exc:
                raise HistoryFileError(f"{path} line {reader.line_num}: {exc}") from None
    except FileNotFoundError:
        raise HistoryFileError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise HistoryFileError(f"{path} is a directory, not a CSV file") from None
    except UnicodeDecodeError:
        raise HistoryFileError(f"{path} is not a text CSV file") from None


def _bad(path: Path, lineno: int, message: str) -> HistoryFileError:
    return HistoryFileError(f"{path} line {lineno}: {message}")


def read_trades(path: Path) -> Iterator[Trade]:
    """Prints of a trades CSV: ``time,price,volume`` (Kraken's downloadable layout, no header),
    or our working file with the trade id as a fourth column.

    Checked line by line; times must not decrease. A print whose id is not above the previous
    id is a repeat (an overlapping API page) and is skipped.
    """
    last_t: Decimal | None = None
    last_id: int | None = None
    for lineno, row in _csv_rows(path):
        when, price, volume = _trade_fields(path, lineno, row)
        if len(row) == 4 and row[3].strip():
            trade_id = _int_field(path, lineno, row[3], "trade id")
            if last_id is not None and trade_id <= last_id:
                continue
            last_id = trade_id
        if last_t is not None and when < last_t:
            raise _bad(
                path,
                lineno,
                f"time {row[0].strip()} is earlier than the line before "
                "(trades must be in time order)",
            )
        last_t = when
        yield when, price, volume


def _trade_fields(path: Path, lineno: int, row: list[str]) -> Trade:
    if len(row) not in (3, 4):
        raise _bad(path, lineno, f"expected 3 columns (time,price,volume), found {len(row)}")
    when = _number_field(path, lineno, row[0], "time")
    price = _number_field(path, lineno, row[1], "price")
    volume = _number_field(path, lineno, row[2], "volume")
    if price == 0:
        raise _bad(path, lineno, "price is zero")
    return when, price, volume


def _number_field(path: Path, lineno: int, text: str, what: str) -> Decimal:
    value = _decimal(text)
    if value is None:
        raise _bad(path, lineno, f"{what} {text.strip()!r} is not a non-negative number")
    return value


def _int_field(path: Path, lineno: int, text: str, what: str) -> int:
    with contextlib.suppress(ValueError):
        number = int(text)  # the common case, several times faster than via Decimal
        if number >= 0:
            return number
    value = _decimal(text)
    if value is None or value != value.to_integral_value():
        raise _bad(path, lineno, f"{what} {text.strip()!r} is not a non-negative whole number")
    return int(value)


def read_ohlcvt(path: Path, interval_min: int) -> Iterator[CandleRow]:
    """Validated exact rows of an OHLCVT CSV (``time,open,high,low,close,volume,count``, no
    header; a missing count reads as 0): times on the interval's grid and strictly
    increasing, positive prices, low <= open, close <= high. Numbers come out as fixed-point
    text, so ``1E-5`` in a file becomes ``0.00001``."""
    step = interval_min * MINUTE
    grid = step if DAY % step == 0 else MINUTE  # weekly candles need not sit on a 7-day grid
    prev: int | None = None
    for lineno, row in _csv_rows(path):
        candle = _candle_fields(path, lineno, row)
        if candle[0] % grid:
            raise _bad(path, lineno, f"time {candle[0]} is not on a {interval_min}-minute boundary")
        if prev is not None and candle[0] <= prev:
            raise _bad(path, lineno, f"time {candle[0]} is not after the row before")
        prev = candle[0]
        yield candle


def _candle_fields(path: Path, lineno: int, row: list[str]) -> CandleRow:
    if len(row) not in (6, 7):
        raise _bad(
            path,
            lineno,
            f"expected 7 columns (time,open,high,low,close,volume,count), found {len(row)}",
        )
    when = _int_field(path, lineno, row[0], "time")
    names = ("open", "high", "low", "close", "volume")
    o, h, lo, c, v = (_number_field(path, lineno, row[i + 1], n) for i, n in enumerate(names))
    count = _int_field(path, lineno, row[6], "count") if len(row) == 7 else 0
    if lo == 0:
        raise _bad(path, lineno, "low price is zero")
    if not lo <= min(o, c) <= max(o, c) <= h:
        raise _bad(path, lineno, "high and low do not enclose open and close")
    return (
        when,
        decimal_text(o),
        decimal_text(h),
        decimal_text(lo),
        decimal_text(c),
        decimal_text(v),
        count,
    )


def detect_kind(path: Path) -> Literal["ohlcvt", "trades"]:
    """Kraken's OHLCVT files have 7 columns, its trades files 3: the first row tells."""
    for lineno, row in _csv_rows(path):
        if len(row) in (6, 7):
            return "ohlcvt"
        if len(row) == 3:
            return "trades"
        raise _bad(
            path,
            lineno,
            f"{len(row)} columns: neither an OHLCVT file (7: time,open,"
            "high,low,close,volume,count) nor a trades file (3: time,"
            "price,volume)",
        )
    raise HistoryFileError(f"{path} has no rows")


def check_file_pair(path: Path, pair: str) -> None:
    """Refuse e.g. XBTUSD_60.csv imported as XRP/USD: a Kraken-named file says its pair. Only
    names that end in the pair's quote currency are taken as pair names."""
    match = OHLCVT_NAME.match(path.name) or _TRADES_NAME.match(path.name)
    if match is None:
        return
    named, altname = match.group(1).upper(), rest_altname(pair).upper()
    quote = rest_altname(pair.partition("/")[2] or "USD").upper()
    if named != altname and named.endswith(quote):
        raise DownloadError(
            f"{path.name} is Kraken's file for {named}, not for {pair} "
            f"({altname}); check the file or the pair"
        )


def file_interval(path: Path, given: int | None) -> int:
    """The candle interval in minutes: as given, else from a Kraken file name like
    ``XBTUSD_60.csv``, else the largest step that divides every gap between rows."""
    if given is not None:
        if given < 1:
            raise DownloadError(f"interval must be a positive number of minutes, not {given}")
        return given
    match = OHLCVT_NAME.match(path.name)
    if match and int(match.group(2)) >= 1:
        return int(match.group(2))
    step, prev = 0, None
    for row in read_ohlcvt(path, 1):
        if prev is not None:
            step = math.gcd(step, row[0] - prev)
        prev = row[0]
    if step == 0:
        raise DownloadError(
            f"cannot tell the candle interval of {path.name} (one row); "
            "name it like XRPUSD_60.csv or give the interval"
        )
    return step // MINUTE


# --- Trades paging -----------------------------------------------------------------------------


class Print(NamedTuple):
    when: Decimal
    trade_id: int | None
    line: str  # the working-file line, Kraken's own text


class TradesPager:
    """Trades pages for one pair: at most one call per ``pause_s`` (Kraken's public limit is
    about one a second per IP), throttling and outages retried with exponential backoff,
    any other refusal turned into a one-line DownloadError."""

    def __init__(
        self,
        rest: KrakenPublicRest,
        pair: str,
        page_size: int,
        pause_s: float,
        max_retries: int,
        backoff_s: float,
    ) -> None:
        self.rest, self.pair, self.page_size = rest, pair, page_size
        self.pause_s, self.max_retries, self.backoff_s = pause_s, max_retries, backoff_s
        self.requests = 0
        self._next_at = 0.0

    async def page(self, since: int) -> tuple[list[list[Any]], int]:
        attempt = 0
        while True:
            await self._pace()
            self.requests += 1
            try:
                return await self.rest.trades(self.pair, since, self.page_size)
            except (KrakenRateLimited, KrakenUnavailable) as exc:
                if attempt >= self.max_retries:
                    raise DownloadError(_gave_up(self.pair, exc, attempt)) from None
                delay = retry_delay(exc, attempt, self.backoff_s)
                log.warning("Trades %s: %s; retrying in %.1fs", self.pair, exc, delay)
                await asyncio.sleep(delay)
                attempt += 1
            except KrakenError as exc:
                raise DownloadError(_refused(self.pair, exc)) from None

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._next_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_at = loop.time() + self.pause_s


def retry_delay(exc: KrakenError, attempt: int, base_s: float) -> float:
    """Doubling delays, or until the time ``EService:Throttled: <unix ts>`` names."""
    delay = min(_MAX_BACKOFF_S, base_s * 2.0 ** min(attempt, 30))
    for error in exc.errors:
        head, _, ts = error.partition("Throttled:")
        if head.startswith("EService") and ts.strip().isdigit():
            delay = max(delay, min(_MAX_THROTTLE_S, int(ts) - time.time()))
    return delay


def _refused(pair: str, exc: KrakenError) -> str:
    if any("Unknown asset pair" in e for e in exc.errors):
        return (
            f"Kraken does not know the pair {pair!r} (asked for {rest_altname(pair)}); "
            "give it as BASE/QUOTE, e.g. XRP/USD"
        )
    return f"Kraken refused the trades request for {pair}: {'; '.join(exc.errors)}"


def _gave_up(pair: str, exc: KrakenError, retries: int) -> str:
    what = "rate-limiting us" if isinstance(exc, KrakenRateLimited) else "unavailable"
    return (
        f"Kraken is still {what} after {retries} retries ({'; '.join(exc.errors)}); "
        f"progress for {pair} is saved, run the same download again to continue"
    )


def _parse_print(row: list[Any]) -> Print:
    """One Trades row ``[price, volume, time, side, type, misc, trade_id]``, checked."""
    try:
        price, volume, when = (str(row[i]).strip() for i in range(3))
        trade_id = int(row[6]) if len(row) > 6 else None
    except (TypeError, ValueError, IndexError, KeyError):
        raise _unreadable(row) from None
    t, p, v = _decimal(when), _decimal(price), _decimal(volume)
    if t is None or p is None or v is None or p == 0:
        raise _unreadable(row)
    return Print(t, trade_id, f"{when},{price},{volume},{'' if trade_id is None else trade_id}\n")


def _unreadable(row: object) -> DownloadError:
    return DownloadError(f"Kraken sent a trade row this program cannot read: {row!r:.200}")


def new_prints(rows: list[list[Any]], last_id: int | None) -> list[Print]:
    """The page's prints after ``last_id``: a page may repeat the end of the one before."""
    fresh = []
    for row in rows:
        p = _parse_print(row)
        if p.trade_id is not None:
            if last_id is not None and p.trade_id <= last_id:
                continue
            last_id = p.trade_id
        fresh.append(p)
    return fresh
