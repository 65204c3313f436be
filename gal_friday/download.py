"""Price history for training and backtests: 1-minute candles built from Kraken's public trades,
and imports of Kraken's downloadable history files.

Kraken's ``OHLC`` endpoint returns only the last 720 candles, so ``download_candles`` pages
through the public ``Trades`` endpoint (``since`` = the nanosecond cursor Kraken returns as
``last``) and aggregates the prints into 1-minute candles with exact decimals, as Kraken builds
its own files: open = first print, high/low = extremes, close = last print, volume = sum,
count = prints; minutes without prints are absent. The window ends at the last whole minute,
so every candle written is complete and a later run can append after it.

Files beside the candle file ``out`` (e.g. ``data/XRPUSD_1.csv``, layout of ``candles.py``):

* ``<out>.state.json``: the sidecar, replaced atomically. The pair, the interval, ``covered``
  (the half-open ``[from, to)`` unix-second ranges the file holds completely) and ``job``, the
  download in progress: its range, the ``since`` cursor, the last trade id written and the
  committed length of the working file.
* ``<out>.trades.part``: the job's prints as Kraken sent them, one ``time,price,volume,id``
  line each, appended a page at a time; deleted once its candles are in ``out``.

A page is appended and fsynced before the sidecar records it. After a crash or Ctrl-C the
working file is cut back to the recorded length and fetching resumes at the recorded cursor,
so no page is fetched twice and no print counted twice (prints whose id is not above the last
id are dropped, which also absorbs overlapping pages). When the job reaches its end, its
candles replace that range of ``out`` (temporary file, then rename) and the range joins
``covered``; a later run fetches only ranges not yet covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, NamedTuple, TypeVar

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from gal_friday.candles import CandleFileError, CandleRow, write_candles
from gal_friday.kraken.rest import (
    KrakenError,
    KrakenPublicRest,
    KrakenRateLimited,
    KrakenUnavailable,
)
from gal_friday.kraken.symbols import rest_altname

log = logging.getLogger(__name__)

Trade = tuple[Decimal, Decimal, Decimal]  # time (unix seconds), price, volume
Kind = Literal["auto", "ohlcvt", "trades"]
_T = TypeVar("_T")

MINUTE = 60
DAY = 86_400
PAGE_SIZE = 1000  # Kraken's maximum ``count`` for Trades
_NS = 1_000_000_000
_LEAD_S = 1  # a job asks from a second early: Kraken's times are rounded floats, ``since`` is
# exact nanoseconds, so a print just before a range's start may carry the start's time
_MAX_BACKOFF_S = 60.0
_MAX_THROTTLE_S = 600.0
_CTX = Context(prec=60)  # volume sums stay exact far beyond any real day's volume
_OHLCVT_NAME = re.compile(r"^([A-Za-z0-9]+)_(\d+)\.csv$")
_TRADES_NAME = re.compile(r"^([A-Za-z0-9]+)\.csv$")


class DownloadError(Exception):
    """A download or import that cannot go on; ``str()`` is one line meant for the user."""


class HistoryFileError(DownloadError):
    """A history file that is not what it should be; the message names the file and line."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download run did; ``up_to_date`` means the file already held the window."""

    out: Path
    pair: str
    start_s: int
    end_s: int
    candles: int
    requests: int
    trades: int
    resumed: bool
    up_to_date: bool


@dataclass(frozen=True)
class ImportResult:
    """What an import did: ``rows_in`` lines read, ``candles`` rows now in ``out``."""

    out: Path
    kind: Literal["ohlcvt", "trades"]
    interval_min: int
    rows_in: int
    candles: int
    first_s: int
    last_s: int


def default_output(data_dir: Path, pair: str, interval_min: int = 1) -> Path:
    """``data/XRPUSD_1.csv``: Kraken's own file naming, so its files and ours are one set."""
    return data_dir / f"{rest_altname(pair)}_{interval_min}.csv"


# --- aggregation -------------------------------------------------------------------------------


def aggregate_trades(trades: Iterable[Trade]) -> Iterator[CandleRow]:
    """1-minute candles of time-ordered prints, exact: decimals in, fixed-point text out.

    Streams (one open minute at a time), since a full-history trades file has tens of millions
    of prints. Raises ValueError if a print is earlier than the minute being built.
    """
    current: list[Any] | None = None  # [minute, open, high, low, close, volume, count]
    for when, price, volume in trades:
        minute = int(when // MINUTE) * MINUTE
        if current is not None and minute == current[0]:
            current[2] = max(current[2], price)
            current[3] = min(current[3], price)
            current[4] = price
            current[5] = _CTX.add(current[5], volume)
            current[6] += 1
            continue
        if current is not None:
            if minute < current[0]:
                raise ValueError(f"print at {when} is earlier than minute {current[0]}")
            yield _candle(current)
        current = [minute, price, price, price, price, volume, 1]
    if current is not None:
        yield _candle(current)


def _candle(c: list[Any]) -> CandleRow:
    return (c[0], _text(c[1]), _text(c[2]), _text(c[3]), _text(c[4]), _text(c[5]), c[6])


def _text(value: Decimal) -> str:
    """Fixed-point text (never ``1E-8``), trailing zeros kept as Kraken wrote them."""
    return format(value, "f")


def _decimal(text: str) -> Decimal | None:
    """A finite non-negative number, or None: the one gate every price, volume and time
    passes through, whether it came from Kraken's API or from a file."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


# --- reading and writing candle and trade files -----------------------------------------------


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
            raise _bad(path, lineno, f"time {row[0].strip()} is earlier than the line before "
                                     "(trades must be in time order)")
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
            raise _bad(path, lineno, f"time {candle[0]} is not on a {interval_min}-minute "
                                     "boundary")
        if prev is not None and candle[0] <= prev:
            raise _bad(path, lineno, f"time {candle[0]} is not after the row before")
        prev = candle[0]
        yield candle


def _candle_fields(path: Path, lineno: int, row: list[str]) -> CandleRow:
    if len(row) not in (6, 7):
        raise _bad(path, lineno, f"expected 7 columns (time,open,high,low,close,volume,count), "
                                 f"found {len(row)}")
    when = _int_field(path, lineno, row[0], "time")
    names = ("open", "high", "low", "close", "volume")
    o, h, lo, c, v = (_number_field(path, lineno, row[i + 1], n) for i, n in enumerate(names))
    count = _int_field(path, lineno, row[6], "count") if len(row) == 7 else 0
    if lo == 0:
        raise _bad(path, lineno, "low price is zero")
    if not lo <= min(o, c) <= max(o, c) <= h:
        raise _bad(path, lineno, "high and low do not enclose open and close")
    return when, _text(o), _text(h), _text(lo), _text(c), _text(v), count


def _write_rows(path: Path, rows: Iterable[CandleRow]) -> int:
    """Write candle rows (streamed: a Kraken full-history file runs to millions of rows)."""
    try:
        return write_candles(path, rows)
    except CandleFileError as exc:
        raise DownloadError(f"{exc} (this is a bug)") from None


def _merge_into(out: Path, new: Iterable[CandleRow], lo: int, hi: int, interval_min: int) -> int:
    """Replace the rows of ``[lo, hi)`` in ``out`` by ``new`` (all inside that range), keep the
    rest: re-running a merge after a crash gives the same file."""
    old = read_ohlcvt(out, interval_min) if out.exists() else iter(())
    kept = (row for row in old if not lo <= row[0] < hi)
    return _write_rows(out, heapq.merge(kept, new, key=lambda row: row[0]))


# --- the sidecar --------------------------------------------------------------------------------


class _Job(msgspec.Struct, kw_only=True):
    """A download in progress: prints of ``[start_s, end_s)`` fetched up to ``cursor``."""

    start_s: int
    end_s: int
    cursor: int  # ``since`` for the next page, nanoseconds
    reached_s: int  # time of the newest print fetched (progress)
    last_id: int | None = None
    part_bytes: int = 0
    trades: int = 0
    fetched: bool = False


class _State(msgspec.Struct, kw_only=True):
    """Everything a later run needs to know about ``out``; see the module docstring."""

    pair: str
    interval_min: int
    covered: list[tuple[int, int]] = msgspec.field(default_factory=list)
    job: _Job | None = None
    version: int = 1


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.json")


def _part_path(out: Path) -> Path:
    return out.with_name(out.name + ".trades.part")


def _load_state(out: Path, pair: str, interval_min: int) -> _State:
    """The sidecar of ``out``; without one, the range an existing candle file already holds
    (say, one copied in by hand) counts as covered, so it is never fetched again."""
    _check_name_interval(out, interval_min)
    path = _state_path(out)
    if not path.exists():
        state = _State(pair=pair, interval_min=interval_min)
        if out.exists():
            state.covered = _covered_by_file(out, interval_min)
        return state
    try:
        state = msgspec.json.decode(path.read_bytes(), type=_State)
    except msgspec.DecodeError as exc:
        raise DownloadError(f"{path} is damaged ({exc}); delete it and "
                            f"{_part_path(out).name} to start over") from None
    if state.pair != pair or state.interval_min != interval_min:
        raise DownloadError(f"{out} holds {state.pair} {state.interval_min}-minute candles, "
                            f"not {pair} {interval_min}-minute ones; choose another file")
    if not out.exists():
        state.covered = []  # the candle file was deleted: what it covered is gone too
    return state


def _check_name_interval(out: Path, interval_min: int) -> None:
    match = _OHLCVT_NAME.match(out.name)
    if match and int(match.group(2)) != interval_min:
        raise DownloadError(f"{out} is named as a {match.group(2)}-minute file; "
                            f"this writes {interval_min}-minute candles")


def _covered_by_file(out: Path, interval_min: int) -> list[tuple[int, int]]:
    first = last = None
    for row in read_ohlcvt(out, interval_min):
        first = row[0] if first is None else first
        last = row[0]
    if first is None or last is None:
        return []
    return [(first, last + interval_min * MINUTE)]


def _save_state(out: Path, state: _State) -> None:
    """Replace the sidecar atomically (temporary file, fsync, rename): a crash leaves either
    the old state or the new one, never a mix."""
    path = _state_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(msgspec.json.encode(state))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _missing(lo: int, hi: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` outside every covered range."""
    gaps, cursor = [], lo
    for a, b in sorted(covered):
        if b <= cursor:
            continue
        if a >= hi:
            break
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < hi:
        gaps.append((cursor, hi))
    return gaps


def _cover(covered: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """``covered`` plus ``[lo, hi)``, overlapping and touching ranges joined."""
    joined: list[tuple[int, int]] = []
    for a, b in sorted([*covered, (lo, hi)]):
        if joined and a <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], b))
        else:
            joined.append((a, b))
    return joined


# --- fetching -----------------------------------------------------------------------------------


class _Print(NamedTuple):
    when: Decimal
    trade_id: int | None
    line: str  # the working-file line, Kraken's own text


class _Pager:
    """Trades pages for one pair: at most one call per ``pause_s`` (Kraken's public limit is
    about one a second per IP), throttling and outages retried with exponential backoff,
    any other refusal turned into a one-line DownloadError."""

    def __init__(self, rest: KrakenPublicRest, pair: str, page_size: int, pause_s: float,
                 max_retries: int, backoff_s: float) -> None:
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
                delay = _backoff(exc, attempt, self.backoff_s)
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


def _backoff(exc: KrakenError, attempt: int, base_s: float) -> float:
    """Doubling delays, or until the time ``EService:Throttled: <unix ts>`` names."""
    delay = min(_MAX_BACKOFF_S, base_s * 2.0 ** min(attempt, 30))
    for error in exc.errors:
        head, _, ts = error.partition("Throttled:")
        if head.startswith("EService") and ts.strip().isdigit():
            delay = max(delay, min(_MAX_THROTTLE_S, int(ts) - time.time()))
    return delay


def _refused(pair: str, exc: KrakenError) -> str:
    if any("Unknown asset pair" in e for e in exc.errors):
        return (f"Kraken does not know the pair {pair!r} (asked for {rest_altname(pair)}); "
                "give it as BASE/QUOTE, e.g. XRP/USD")
    return f"Kraken refused the trades request for {pair}: {'; '.join(exc.errors)}"


def _gave_up(pair: str, exc: KrakenError, retries: int) -> str:
    what = "rate-limiting us" if isinstance(exc, KrakenRateLimited) else "unavailable"
    return (f"Kraken is still {what} after {retries} retries ({'; '.join(exc.errors)}); "
            f"progress for {pair} is saved, run the same download again to continue")


def _parse_print(row: list[Any]) -> _Print:
    """One Trades row ``[price, volume, time, side, type, misc, trade_id]``, checked."""
    try:
        price, volume, when = (str(row[i]).strip() for i in range(3))
        trade_id = int(row[6]) if len(row) > 6 else None
    except (TypeError, ValueError, IndexError, KeyError):
        raise _unreadable(row) from None
    t, p, v = _decimal(when), _decimal(price), _decimal(volume)
    if t is None or p is None or v is None or p == 0:
        raise _unreadable(row)
    return _Print(t, trade_id, f"{when},{price},{volume},{'' if trade_id is None else trade_id}\n")


def _unreadable(row: object) -> DownloadError:
    return DownloadError(f"Kraken sent a trade row this program cannot read: {row!r:.200}")


def _new_prints(rows: list[list[Any]], last_id: int | None) -> list[_Print]:
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


async def _fetch_page(pager: _Pager, fh: IO[bytes], job: _Job) -> None:
    """Fetch the page at the job's cursor, append its prints inside the range (fsynced), and
    advance the job; the caller then records the job, so the two stay in step."""
    rows, last = await pager.page(job.cursor)
    prints = _new_prints(rows, job.last_id)
    lines = [p.line for p in prints if job.start_s <= p.when < job.end_s]
    data = "".join(lines).encode()
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())
    job.part_bytes += len(data)
    job.trades += len(lines)
    ids = [p.trade_id for p in prints if p.trade_id is not None]
    if ids:
        job.last_id = ids[-1]
    if prints:
        job.reached_s = max(job.reached_s, min(job.end_s, int(prints[-1].when)))
    # an empty page: no prints after the cursor yet; a stuck cursor: never loop forever
    job.fetched = not rows or last <= job.cursor or any(p.when >= job.end_s for p in prints)
    job.cursor = max(job.cursor, last)
    if job.fetched:
        job.reached_s = job.end_s


# --- progress -----------------------------------------------------------------------------------


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 2 * DAY else f"{seconds / DAY:.1f} d"


class _Bar:
    """Time covered out of the time to fetch, with rich (on stderr: stdout is for results);
    disabled, it costs nothing and prints nothing."""

    def __init__(self, enabled: bool, pair: str, total_s: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[covered]}"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not enabled,
        )
        self._total = max(1, total_s)
        self._task = self._progress.add_task(f"{pair} trades", total=self._total, covered="")
        self._done = 0

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def show(self, job: _Job) -> None:
        covered = self._done + job.reached_s - job.start_s
        self._progress.update(self._task, completed=covered,
                              covered=f"{_span(covered)} of {_span(self._total)}")

    def job_done(self, job: _Job) -> None:
        self._done += job.end_s - job.start_s
        self._progress.update(self._task, completed=self._done,
                              covered=f"{_span(self._done)} of {_span(self._total)}")


# --- the download -------------------------------------------------------------------------------


def _window(days: float, now_s: float) -> tuple[int, int]:
    """``[start, end)`` on whole minutes; the minute in progress is left out, so no candle in
    the file is ever partial."""
    if not (math.isfinite(days) and days > 0):
        raise DownloadError(f"days must be a positive number, not {days}")
    end = int(now_s // MINUTE) * MINUTE
    start = int((now_s - days * DAY) // MINUTE) * MINUTE
    return start, end


def _begin_job(out: Path, state: _State, lo: int, hi: int) -> None:
    state.job = _Job(start_s=lo, end_s=hi, cursor=(lo - _LEAD_S) * _NS, reached_s=lo)
    _part_path(out).parent.mkdir(parents=True, exist_ok=True)
    _part_path(out).write_bytes(b"")
    _save_state(out, state)


def _prepare_part(out: Path, job: _Job) -> None:
    """Cut the working file back to what the sidecar committed (a page written just before a
    crash is dropped and fetched again); if it is shorter, it was lost: start the job over."""
    part = _part_path(out)
    size = part.stat().st_size if part.exists() else -1
    if size >= job.part_bytes:
        os.truncate(part, job.part_bytes)
        return
    log.warning("%s is missing or short; fetching %s again from its start", part, out.name)
    job.cursor, job.reached_s, job.last_id = (job.start_s - _LEAD_S) * _NS, job.start_s, None
    job.part_bytes, job.trades, job.fetched = 0, 0, False
    part.write_bytes(b"")


async def _run_job(pager: _Pager, out: Path, state: _State, bar: _Bar) -> int:
    """Fetch the job's remaining pages, then merge its candles into ``out``; returns the prints
    fetched by this run."""
    job = state.job
    assert job is not None
    _prepare_part(out, job)
    before = job.trades
    bar.show(job)
    with _part_path(out).open("ab") as fh:
        while not job.fetched:
            await _fetch_page(pager, fh, job)
            _save_state(out, state)
            bar.show(job)
    _finish_job(out, state, job)
    bar.job_done(job)
    return job.trades - before


def _finish_job(out: Path, state: _State, job: _Job) -> None:
    """Candles of the fetched prints into ``out``, the range into ``covered``, the working
    file away, in that order: a crash in between only repeats an idempotent merge."""
    part = _part_path(out)
    try:
        _merge_into(out, aggregate_trades(read_trades(part)), job.start_s, job.end_s, 1)
    except ValueError as exc:
        raise DownloadError(f"{part}: {exc}; delete it and {_state_path(out).name}") from None
    state.covered = _cover(state.covered, job.start_s, job.end_s)
    state.job = None
    _save_state(out, state)
    part.unlink(missing_ok=True)


def _forget_if_empty(out: Path, state: _State) -> None:
    """After a refusal with nothing saved (a mistyped pair), leave no sidecar behind."""
    job = state.job
    if not out.exists() and not state.covered and (job is None or job.trades == 0):
        _state_path(out).unlink(missing_ok=True)
        _part_path(out).unlink(missing_ok=True)


def _count_rows(out: Path) -> int:
    if not out.exists():
        return 0
    with out.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


async def download_candles(rest: KrakenPublicRest, pair: str, days: float, out: Path, *,
                           pause_s: float = 1.0, progress: bool = True,
                           now_s: float | None = None, page_size: int = PAGE_SIZE,
                           max_retries: int = 8, backoff_s: float = 2.0) -> DownloadResult:
    """1-minute candles of ``pair`` for the last ``days`` into ``out``, built from Trades.

    Resumes an interrupted run, skips ranges ``out`` already covers, fetches only what is
    new. ``pause_s`` is the minimum time between calls; rate limits and outages are retried
    ``max_retries`` times (``backoff_s`` doubling), then raise DownloadError, as does any
    other refusal (unknown pair). ``now_s`` fixes the clock (tests, reproducible windows).
    """
    start_s, end_s = _window(days, time.time() if now_s is None else now_s)
    state = _load_state(out, pair, 1)
    job = state.job
    claimed = [*state.covered, *([(job.start_s, job.end_s)] if job else [])]
    gaps = _missing(start_s, end_s, claimed)
    total = sum(b - a for a, b in gaps) + (job.end_s - job.start_s if job else 0)
    pager = _Pager(rest, pair, max(1, min(PAGE_SIZE, page_size)), pause_s, max_retries,
                   backoff_s)
    fetched = 0
    try:
        with _Bar(progress and total > 0, pair, total) as bar:
            if job is not None:
                log.info("resuming the %s download into %s", pair, out)
                fetched += await _run_job(pager, out, state, bar)
            for lo, hi in gaps:
                _begin_job(out, state, lo, hi)
                fetched += await _run_job(pager, out, state, bar)
    except DownloadError:
        _forget_if_empty(out, state)
        raise
    return DownloadResult(out, pair, start_s, end_s, _count_rows(out), pager.requests, fetched,
                          resumed=job is not None, up_to_date=job is None and not gaps)


# --- import -------------------------------------------------------------------------------------


def _detect_kind(path: Path) -> Literal["ohlcvt", "trades"]:
    """Kraken's OHLCVT files have 7 columns, its trades files 3: the first row tells."""
    for lineno, row in _csv_rows(path):
        if len(row) in (6, 7):
            return "ohlcvt"
        if len(row) == 3:
            return "trades"
        raise _bad(path, lineno, f"{len(row)} columns: neither an OHLCVT file (7: time,open,"
                                 "high,low,close,volume,count) nor a trades file (3: time,"
                                 "price,volume)")
    raise HistoryFileError(f"{path} has no rows")


def _check_file_pair(path: Path, pair: str) -> None:
    """Refuse e.g. XBTUSD_60.csv imported as XRP/USD: a Kraken-named file says its pair. Only
    names that end in the pair's quote currency are taken as pair names."""
    match = _OHLCVT_NAME.match(path.name) or _TRADES_NAME.match(path.name)
    if match is None:
        return
    named, altname = match.group(1).upper(), rest_altname(pair).upper()
    quote = rest_altname(pair.partition("/")[2] or "USD").upper()
    if named != altname and named.endswith(quote):
        raise DownloadError(f"{path.name} is Kraken's file for {named}, not for {pair} "
                            f"({altname}); check the file or the pair")


def _interval_of(path: Path, given: int | None) -> int:
    """The candle interval in minutes: as given, else from a Kraken file name like
    ``XBTUSD_60.csv``, else the largest step that divides every gap between rows."""
    if given is not None:
        if given < 1:
            raise DownloadError(f"interval must be a positive number of minutes, not {given}")
        return given
    match = _OHLCVT_NAME.match(path.name)
    if match and int(match.group(2)) >= 1:
        return int(match.group(2))
    step, prev = 0, None
    for row in read_ohlcvt(path, 1):
        if prev is not None:
            step = math.gcd(step, row[0] - prev)
        prev = row[0]
    if step == 0:
        raise DownloadError(f"cannot tell the candle interval of {path.name} (one row); "
                            "name it like XRPUSD_60.csv or give the interval")
    return step // MINUTE


class _Counted:
    """Counts the items passing through, for the summary without another pass."""

    def __init__(self) -> None:
        self.n = 0

    def through(self, items: Iterable[_T]) -> Iterator[_T]:
        for item in items:
            self.n += 1
            yield item


def _scan(path: Path, kind: str, interval_min: int) -> tuple[int, int, int]:
    """Validate the whole file before touching the output: (input rows, first, last time)."""
    counter = _Counted()
    rows: Iterator[CandleRow] = (
        aggregate_trades(counter.through(read_trades(path))) if kind == "trades"
        else counter.through(read_ohlcvt(path, interval_min)))
    first = last = None
    for row in rows:
        first = row[0] if first is None else first
        last = row[0]
    if first is None or last is None:
        raise HistoryFileError(f"{path} has no rows")
    return counter.n, first, last


def import_history(path: Path, pair: str, data_dir: Path, *, kind: Kind = "auto",
                   interval_min: int | None = None, out: Path | None = None) -> ImportResult:
    """Import a Kraken downloadable history file for ``pair`` into the data directory.

    OHLCVT files are validated and normalised into ``{ALTNAME}_{interval}.csv``; trades files
    (``time,price,volume``) are aggregated into 1-minute candles exactly as downloads are.
    The imported range replaces that range of an existing file and is recorded as covered,
    so a later download fetches only what the import did not bring. The file is checked in
    full first; a malformed line raises HistoryFileError naming it, with nothing written.
    """
    found = _detect_kind(path) if kind == "auto" else kind
    _check_file_pair(path, pair)
    if found == "trades" and interval_min not in (None, 1):
        raise DownloadError("a trades file becomes 1-minute candles; leave the interval out")
    interval = 1 if found == "trades" else _interval_of(path, interval_min)
    target = out if out is not None else default_output(data_dir, pair, interval)
    rows_in, first, last = _scan(path, found, interval)
    state = _load_state(target, pair, interval)
    hi = last + interval * MINUTE
    new = (aggregate_trades(read_trades(path)) if found == "trades"
           else read_ohlcvt(path, interval))
    candles = _merge_into(target, new, first, hi, interval)
    state.covered = _cover(state.covered, first, hi)
    _save_state(target, state)
    return ImportResult(target, found, interval, rows_in, candles, first, last)
