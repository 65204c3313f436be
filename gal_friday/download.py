"""Price history for training and backtests: 1-minute candles built from Kraken's public trades,
and imports of Kraken's downloadable history files.

``download_candles`` pages through Kraken's public ``Trades`` endpoint
(``gal_friday.kraken.history``) and aggregates the prints into 1-minute candles
(``gal_friday.candles.aggregate_trades``). The window ends at the last whole minute, so every
candle written is complete and a later run can append after it.

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

import heapq
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, TypeVar

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from gal_friday.candles import MINUTE, CandleFileError, CandleRow, aggregate_trades, write_candles
from gal_friday.folders import make_folder
from gal_friday.kraken.history import (
    OHLCVT_NAME,
    PAGE_SIZE,
    DownloadError,
    HistoryFileError,
    TradesPager,
    check_file_pair,
    default_output,
    detect_kind,
    file_interval,
    new_prints,
    read_ohlcvt,
    read_trades,
)
from gal_friday.kraken.rest import KrakenPublicRest

__all__ = [
    "DownloadError",
    "DownloadResult",
    "HistoryFileError",
    "ImportResult",
    "default_output",
    "download_candles",
    "import_history",
]

log = logging.getLogger(__name__)

Kind = Literal["auto", "ohlcvt", "trades"]
_T = TypeVar("_T")

DAY = 86_400
_NS = 1_000_000_000
_LEAD_S = 1  # a job asks from a second early: Kraken's times are rounded floats, ``since`` is
# exact nanoseconds, so a print just before a range's start may carry the start's time


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


# --- writing candle files ----------------------------------------------------------------------


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
        raise DownloadError(
            f"{path} is damaged ({exc}); delete it and {_part_path(out).name} to start over"
        ) from None
    if state.pair != pair or state.interval_min != interval_min:
        raise DownloadError(
            f"{out} holds {state.pair} {state.interval_min}-minute candles, "
            f"not {pair} {interval_min}-minute ones; choose another file"
        )
    if not out.exists():
        state.covered = []  # the candle file was deleted: what it covered is gone too
    return state


def _check_name_interval(out: Path, interval_min: int) -> None:
    match = OHLCVT_NAME.match(out.name)
    if match and int(match.group(2)) != interval_min:
        raise DownloadError(
            f"{out} is named as a {match.group(2)}-minute file; "
            f"this writes {interval_min}-minute candles"
        )


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
    make_folder(path.parent, "candle folder")
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


async def _fetch_page(pager: TradesPager, fh: IO[bytes], job: _Job) -> None:
    """Fetch the page at the job's cursor, append its prints inside the range (fsynced), and
    advance the job; the caller then records the job, so the two stay in step."""
    rows, last = await pager.page(job.cursor)
    prints = new_prints(rows, job.last_id)
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
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[covered]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._total = max(1, total_s)
        self._task = self._progress.add_task(f"{pair} trades", total=self._total, covered="")
        self._done = 0

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def show(self, job: _Job) -> None:
        covered = self._done + job.reached_s - job.start_s
        self._progress.update(
            self._task, completed=covered, covered=f"{_span(covered)} of {_span(self._total)}"
        )

    def job_done(self, job: _Job) -> None:
        self._done += job.end_s - job.start_s
        self._progress.update(
            self._task, completed=self._done, covered=f"{_span(self._done)} of {_span(self._total)}"
        )


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
    make_folder(_part_path(out).parent, "candle folder")
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


async def _run_job(pager: TradesPager, out: Path, state: _State, bar: _Bar) -> int:
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


async def download_candles(
    rest: KrakenPublicRest,
    pair: str,
    days: float,
    out: Path,
    *,
    pause_s: float = 1.0,
    progress: bool = True,
    now_s: float | None = None,
    page_size: int = PAGE_SIZE,
    max_retries: int = 8,
    backoff_s: float = 2.0,
) -> DownloadResult:
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
    pager = TradesPager(
        rest, pair, max(1, min(PAGE_SIZE, page_size)), pause_s, max_retries, backoff_s
    )
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
    return DownloadResult(
        out,
        pair,
        start_s,
        end_s,
        _count_rows(out),
        pager.requests,
        fetched,
        resumed=job is not None,
        up_to_date=job is None and not gaps,
    )


# --- import -------------------------------------------------------------------------------------


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
        aggregate_trades(counter.through(read_trades(path)))
        if kind == "trades"
        else counter.through(read_ohlcvt(path, interval_min))
    )
    first = last = None
    for row in rows:
        first = row[0] if first is None else first
        last = row[0]
    if first is None or last is None:
        raise HistoryFileError(f"{path} has no rows")
    return counter.n, first, last


def import_history(
    path: Path,
    pair: str,
    data_dir: Path,
    *,
    kind: Kind = "auto",
    interval_min: int | None = None,
    out: Path | None = None,
) -> ImportResult:
    """Import a Kraken downloadable history file for ``pair`` into the data directory.

    OHLCVT files are validated and normalised into ``{ALTNAME}_{interval}.csv``; trades files
    (``time,price,volume``) are aggregated into 1-minute candles exactly as downloads are.
    The imported range replaces that range of an existing file and is recorded as covered,
    so a later download fetches only what the import did not bring. The file is checked in
    full first; a malformed line raises HistoryFileError naming it, with nothing written.
    """
    found = detect_kind(path) if kind == "auto" else kind
    check_file_pair(path, pair)
    if found == "trades" and interval_min not in (None, 1):
        raise DownloadError("a trades file becomes 1-minute candles; leave the interval out")
    interval = 1 if found == "trades" else file_interval(path, interval_min)
    target = out if out is not None else default_output(data_dir, pair, interval)
    rows_in, first, last = _scan(path, found, interval)
    state = _load_state(target, pair, interval)
    hi = last + interval * MINUTE
    new = aggregate_trades(read_trades(path)) if found == "trades" else read_ohlcvt(path, interval)
    candles = _merge_into(target, new, first, hi, interval)
    state.covered = _cover(state.covered, first, hi)
    _save_state(target, state)
    return ImportResult(target, found, interval, rows_in, candles, first, last)
