"""Trade prints -> 1-minute candles: exact decimals, absent empty minutes, order enforced."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from gal_friday.candles import aggregate_trades


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
