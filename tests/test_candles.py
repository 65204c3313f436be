"""Trade prints -> 1-minute candles: exact decimals, absent empty minutes, order enforced;
and candle files read back only when each row is a possible candle."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from gal_friday.candles import CandleFileError, aggregate_trades, read_candles


def test_prints_become_exact_minute_candles() -> None:
    prints = [
        (D("120.5"), D("0.50000"), D("0.1")),
        (D(121), D("0.60000"), D("0.2")),
        (D("179.9"), D("0.45000"), D("1E-8")),
        (D(300), D("0.55"), D(3)),
    ]
    assert list(aggregate_trades(prints)) == [
        (120, "0.50000", "0.60000", "0.45000", "0.45000", "0.30000001", 3),
        (300, "0.55", "0.55", "0.55", "0.55", "3", 1),
    ]


def test_a_print_before_the_open_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="earlier than minute 120"):
        list(aggregate_trades([(D(130), D(1), D(1)), (D(59), D(1), D(1))]))


@pytest.mark.parametrize(
    ("row", "values"),
    [
        ("1700000100,1.0,0.9,1.1,1.0,5,1", "open 1.0, high 0.9, low 1.1, close 1.0"),  # high < low
        ("1700000100,1.2,1.1,0.9,1.0,5,1", "open 1.2, high 1.1, low 0.9, close 1.0"),  # open above
        ("1700000100,1.0,1.1,0.9,0.8,5,1", "open 1.0, high 1.1, low 0.9, close 0.8"),  # close below
    ],
)
def test_a_candle_whose_high_and_low_do_not_enclose_it_is_named_by_its_first_bad_line(
    tmp_path: Path, row: str, values: str
) -> None:
    path = tmp_path / "bad.csv"
    good = "1700000040,1.0,1.1,0.9,1.0,5,1"
    path.write_text(f"time,open,high,low,close,volume,count\n{good}\n{row}\n{row[:-1]}2\n")
    with pytest.raises(CandleFileError) as caught:
        read_candles(path)
    assert str(caught.value) == (f"{path}:3: high and low do not enclose open and close ({values})")


def test_a_flat_candle_and_a_doji_at_the_extremes_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("1700000040,1,1,1,1,5,1\n1700000100,1.1,1.1,0.9,0.9,5,1\n")
    assert len(read_candles(path)) == 2
