"""Kraken's history formats and Trades paging helpers, without a network: file readers,
kind / pair / interval detection, and the page checks that drop repeated prints."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from gal_friday.kraken.history import (
    DownloadError,
    HistoryFileError,
    check_file_pair,
    default_output,
    detect_kind,
    file_interval,
    new_prints,
    read_ohlcvt,
    read_trades,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_output_uses_krakens_file_naming(tmp_path: Path) -> None:
    assert default_output(tmp_path, "XRP/USD") == tmp_path / "XRPUSD_1.csv"
    assert default_output(tmp_path, "DOGE/USD", 60) == tmp_path / "XDGUSD_60.csv"


def test_ohlcvt_rows_come_out_exact_and_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path / "XRPUSD_1.csv",
        "1700000040,0.5,0.6,0.5,0.6,15,2\n1700000100,1E-5,1E-5,1E-5,1E-5,1\n",
    )
    assert list(read_ohlcvt(path, 1)) == [
        (1700000040, "0.5", "0.6", "0.5", "0.6", "15", 2),
        (1700000100, "0.00001", "0.00001", "0.00001", "0.00001", "1", 0),
    ]
    bad = write(tmp_path / "bad.csv", "1700000040,0.5,0.4,0.5,0.6,15,2\n")
    with pytest.raises(HistoryFileError, match=r"bad.csv line 1: high and low"):
        list(read_ohlcvt(bad, 1))
    off_grid = write(tmp_path / "grid.csv", "1700000041,0.5,0.6,0.5,0.6,15,2\n")
    with pytest.raises(HistoryFileError, match="not on a 1-minute boundary"):
        list(read_ohlcvt(off_grid, 1))


def test_trades_file_skips_repeated_ids_and_refuses_time_going_back(tmp_path: Path) -> None:
    path = write(tmp_path / "work.csv", "10.5,0.5,100,7\n11,0.6,5,8\n11,0.6,5,8\n12,0.7,1,9\n")
    assert list(read_trades(path)) == [
        (D("10.5"), D("0.5"), D(100)),
        (D(11), D("0.6"), D(5)),
        (D(12), D("0.7"), D(1)),
    ]
    back = write(tmp_path / "XRPUSD.csv", "12,0.5,1\n11,0.5,1\n")
    with pytest.raises(HistoryFileError, match="line 2: time 11 is earlier"):
        list(read_trades(back))


def test_kind_pair_and_interval_from_shape_and_name(tmp_path: Path) -> None:
    ohlcvt = write(tmp_path / "XRPUSD_60.csv", "1699999200,0.5,0.6,0.5,0.6,15,2\n")
    trades = write(tmp_path / "XRPUSD.csv", "1700000000,0.5,1\n")
    assert detect_kind(ohlcvt) == "ohlcvt"
    assert detect_kind(trades) == "trades"
    assert file_interval(ohlcvt, None) == 60
    assert file_interval(ohlcvt, 15) == 15
    check_file_pair(ohlcvt, "XRP/USD")
    with pytest.raises(DownloadError, match=r"XBTUSD_60\.csv is Kraken's file for XBTUSD"):
        check_file_pair(tmp_path / "XBTUSD_60.csv", "XRP/USD")


def test_page_rows_after_the_last_id_only() -> None:
    rows = [
        ["0.5", "10", 1700000000.1, "b", "l", "", 41],
        ["0.6", "1.5", 1700000001.25, "s", "m", "", 42],
    ]
    fresh = new_prints(rows, 41)
    assert [(p.when, p.trade_id, p.line) for p in fresh] == [
        (D("1700000001.25"), 42, "1700000001.25,0.6,1.5,42\n")
    ]
    with pytest.raises(DownloadError, match="cannot read"):
        new_prints([["0", "1", 1700000000, "b", "l", "", 1]], None)
