"""Candles: the OHLCVT CSV files shared by download, features and training, and the
aggregation of trade prints into 1-minute candles.

One row per interval, no header: ``unix_time_s,open,high,low,close,volume,trade_count`` where
the time is the interval's start (Kraken's downloadable history uses exactly this layout, so
its files import as they are). Intervals without trades are absent, as in Kraken's files.

In memory a series is a ``CandleSeries`` of parallel numpy arrays: analysis and model code
works in float64, while the text in the file stays exact.

``aggregate_trades`` builds 1-minute candles from prints with exact decimals, as Kraken builds
its own files: open = first print, high/low = extremes, close = last print, volume = sum,
count = prints; minutes without prints are absent.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gal_friday.folders import make_folder

FloatArray = npt.NDArray[np.float64]
CandleRow = tuple[int, str, str, str, str, str, int]  # time_s, o, h, l, c, volume, count
IntArray = npt.NDArray[np.int64]
Trade = tuple[Decimal, Decimal, Decimal]  # time (unix seconds), price, volume

MINUTE = 60
_CTX = Context(prec=60)  # volume sums stay exact far beyond any real day's volume


class CandleFileError(ValueError):
    """A candle file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class CandleSeries:
    """Candles in time order; ``time_s`` is each interval's start (unix seconds)."""

    time_s: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    trades: IntArray

    def __len__(self) -> int:
        return len(self.time_s)

    def slice(self, start: int, stop: int) -> CandleSeries:
        s = slice(start, stop)
        return CandleSeries(
            self.time_s[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
            self.trades[s],
        )


_MAX_TIME_S = 4_102_444_800  # 2100-01-01: a larger time is in milliseconds, or not a time


def read_candles(path: Path) -> CandleSeries:
    """Read an OHLCVT CSV (Kraken's layout, a header line allowed); rows must be in strictly
    increasing time, with finite positive prices that high and low enclose. The first bad
    row is named by its line."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel's BOM is fine
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or not row[0].strip():
                    continue
                if not rows and not _numeric(row[0]):
                    continue  # a header line
                if len(row) < 6:
                    raise CandleFileError(
                        f"{path}:{lineno}: expected 7 columns "
                        "(time,open,high,low,close,volume,count)"
                    )
                rows.append(row[:7] if len(row) >= 7 else [*row, "0"])
                lines.append(lineno)
    except FileNotFoundError:
        raise CandleFileError(f"candle file not found: {path}") from None
    except UnicodeDecodeError:
        raise CandleFileError(f"{path} is not a text CSV file") from None
    except (OSError, csv.Error) as exc:
        raise CandleFileError(f"{path}: cannot be read ({exc})") from None
    table = np.array(rows, dtype=object).reshape(-1, 7)
    try:
        series = CandleSeries(
            time_s=table[:, 0].astype(np.float64).astype(np.int64),
            open=table[:, 1].astype(np.float64),
            high=table[:, 2].astype(np.float64),
            low=table[:, 3].astype(np.float64),
            close=table[:, 4].astype(np.float64),
            volume=table[:, 5].astype(np.float64),
            trades=table[:, 6].astype(np.int64),
        )
    except ValueError as exc:
        bad = next((k for k, row in enumerate(rows) if not all(map(_numeric, row))), None)
        where = f"{path}:{lines[bad]}" if bad is not None else str(path)
        raise CandleFileError(f"{where}: not a number ({exc})") from None
    _check_rows(path, series, lines)
    return series


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_OHLC = ("open", "high", "low", "close")
_NOT_ENCLOSED = "high and low do not enclose open and close"


def _check_rows(path: Path, series: CandleSeries, lines: list[int]) -> None:
    """Times in seconds and increasing; prices finite and positive, high >= open, close >=
    low (a candle with high < low cannot be traded on: every fill would be wrong); volume
    finite, >= 0."""
    if len(series) == 0:
        return
    prices = np.vstack([series.open, series.high, series.low, series.close])
    checks = (
        (
            (series.time_s <= 0) | (series.time_s > _MAX_TIME_S),
            "time is not unix seconds (milliseconds?)",
        ),
        (
            ~np.isfinite(prices).all(axis=0) | (prices <= 0).any(axis=0),
            "prices must be finite and positive",
        ),
        (
            (series.low > np.minimum(series.open, series.close))
            | (np.maximum(series.open, series.close) > series.high),
            _NOT_ENCLOSED,
        ),
        (~np.isfinite(series.volume) | (series.volume < 0), "volume must be finite, >= 0"),
        (
            np.r_[False, np.diff(series.time_s) <= 0],
            "rows are not in strictly increasing time order",
        ),
    )
    for bad, what in checks:
        if bad.any():
            row = int(bad.argmax())
            if what == _NOT_ENCLOSED:
                shown = zip(_OHLC, prices[:, row], strict=True)
                what += " (" + ", ".join(f"{name} {float(p)!r}" for name, p in shown) + ")"
            raise CandleFileError(f"{path}:{lines[row]}: {what}")


def write_candles(path: Path, rows: Iterable[CandleRow]) -> int:
    """Write exact text rows ``(time_s, open, high, low, close, volume, count)``, streaming;
    returns how many.

    The file appears under its real name only when complete (temporary file, fsync, rename),
    and a row that is not later than the one before is refused, so no caller can ever write a
    duplicated or unordered minute.
    """
    make_folder(path.parent, "candle folder")
    tmp = path.with_suffix(path.suffix + ".tmp")
    written, prev = 0, None
    try:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            for row in rows:
                if prev is not None and row[0] <= prev:
                    raise CandleFileError(
                        f"refusing to write {path}: candle {row[0]} is not after {prev}"
                    )
                writer.writerow(row)
                prev, written = row[0], written + 1
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return written


# --- trades -> 1-minute candles ---------------------------------------------------------------


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
    t = decimal_text
    return (c[0], t(c[1]), t(c[2]), t(c[3]), t(c[4]), t(c[5]), c[6])


def decimal_text(value: Decimal) -> str:
    """Fixed-point text (never ``1E-8``), trailing zeros kept as written."""
    return format(value, "f")
