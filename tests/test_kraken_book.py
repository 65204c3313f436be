"""The local book follows Kraken's v2 maintenance rules exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gal_friday.kraken.book import ACCELERATED, OrderBook
from gal_friday.kraken.checksum import book_checksum
from gal_friday.kraken.numbers import WireNumberError, format_scaled, to_scaled

IMPLEMENTATIONS = [pytest.param(False, id="python"), pytest.param(True, id="c")]


@pytest.fixture(params=IMPLEMENTATIONS, autouse=True)
def accelerated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every test here runs against both BookSide implementations."""
    monkeypatch.setattr(OrderBook.__init__, "__kwdefaults__", {"accelerated": request.param})
    return bool(request.param)


def test_the_c_book_is_built() -> None:
    """CI installs with a compiler, so the fast path must be there (and tested)."""
    assert ACCELERATED


def lv(price: str, qty: str) -> dict[str, object]:
    return {"price": price, "qty": qty}


def make_book(depth: int = 3) -> OrderBook:
    book = OrderBook("XRP/USD", depth, price_precision=5, qty_precision=8)
    book.apply_snapshot(
        [lv("2.10000", "10"), lv("2.09990", "5.5"), lv("2.09980", "1")],
        [lv("2.10010", "7"), lv("2.10020", "3.25"), lv("2.10030", "2")],
    )
    return book


def prices(levels: list[tuple[int, int]]) -> list[int]:
    return [p for p, _ in levels]


def test_snapshot_sorts_bids_down_and_asks_up() -> None:
    book = OrderBook("XRP/USD", 10, 5, 8)
    book.apply_snapshot(
        [lv("2.0", "1"), lv("2.1", "1"), lv("1.9", "1")], [lv("2.3", "1"), lv("2.2", "1")]
    )
    assert prices(book.bids.levels) == [210000, 200000, 190000]
    assert prices(book.asks.levels) == [220000, 230000]


def test_zero_quantity_deletes_the_level() -> None:
    book = make_book()
    book.apply_update([lv("2.09990", "0")], [])
    assert prices(book.bids.levels) == [210000, 209980]


def test_deleting_an_absent_level_changes_nothing() -> None:
    book = make_book()
    before = book.checksum()
    book.apply_update([lv("1.5", "0")], [])
    assert book.checksum() == before


def test_update_replaces_quantity_of_existing_level() -> None:
    book = make_book()
    book.apply_update([], [lv("2.10020", "9.5")])
    assert book.asks.levels[1] == (210020, 950000000)


def test_book_is_truncated_to_subscribed_depth_after_each_message() -> None:
    book = make_book(depth=3)
    book.apply_update([lv("2.10005", "1")], [lv("2.10008", "4")])
    assert prices(book.bids.levels) == [210005, 210000, 209990]
    assert prices(book.asks.levels) == [210008, 210010, 210020]


def test_same_price_repeated_in_one_message_applies_in_order() -> None:
    book = make_book()
    book.apply_update([lv("2.09970", "1"), lv("2.09970", "0"), lv("2.10000", "3")], [])
    assert book.bids.levels[0] == (210000, 300000000)
    assert 209970 not in prices(book.bids.levels)


def test_truncation_happens_after_the_whole_message_not_per_level() -> None:
    """Insert a better level (pushing the worst out) and delete another in the same message:
    the pushed-out level must survive because truncation waits for the end."""
    book = make_book(depth=3)
    book.apply_update([lv("2.10005", "1"), lv("2.10000", "0")], [])
    assert prices(book.bids.levels) == [210005, 209990, 209980]


def test_crossed_book_is_detected() -> None:
    book = make_book()
    book.apply_update([lv("2.10015", "1")], [])
    assert book.is_crossed()


@pytest.mark.parametrize("bad", ["-1.5", "abc", "1.123456789", "1e400", "NaN", True, None, [1]])
def test_bad_wire_numbers_are_refused(bad: object) -> None:
    with pytest.raises(WireNumberError):
        to_scaled(bad, 8)


@pytest.mark.parametrize(
    ("raw", "precision", "scaled"),
    [
        ("0.5", 8, 50000000),
        ("2.10000", 5, 210000),
        (3, 2, 300),
        ("1e-5", 5, 1),
        ("1.50000000000", 5, 150000),
        ("0", 8, 0),
    ],
)
def test_wire_numbers_scale_exactly(raw: object, precision: int, scaled: int) -> None:
    assert to_scaled(raw, precision) == scaled


def test_format_scaled_round_trips() -> None:
    assert format_scaled(100000, 8) == "0.00100000"
    assert to_scaled(format_scaled(123456789, 5), 5) == 123456789


level_st = st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 5))


@given(
    messages=st.lists(st.lists(level_st, max_size=6), min_size=1, max_size=60),
    depth=st.sampled_from([3, 10]),
)
def test_incremental_book_equals_a_book_rebuilt_from_scratch(
    messages: list[list[tuple[bool, int, int]]], depth: int
) -> None:
    """Model check: after every message the cached checksum equals one computed from a plain
    dict model maintained with the documented rules."""
    book = OrderBook("T/USD", depth, 2, 3)
    model: dict[bool, dict[int, int]] = {True: {}, False: {}}
    for message in messages:
        bids = [lv(format_scaled(p * 7, 2), format_scaled(q * 1000, 3)) for b, p, q in message if b]
        asks = [
            lv(format_scaled(1000 + p * 7, 2), format_scaled(q * 1000, 3))
            for b, p, q in message
            if not b
        ]
        book.apply_update(bids, asks)
        for is_bid, rows in ((True, bids), (False, asks)):
            for row in rows:
                price, qty = to_scaled(row["price"], 2), to_scaled(row["qty"], 3)
                if qty:
                    model[is_bid][price] = qty
                else:
                    model[is_bid].pop(price, None)
            kept = sorted(model[is_bid].items(), reverse=is_bid)[:depth]
            model[is_bid] = dict(kept)
        want_bids = sorted(model[True].items(), reverse=True)
        want_asks = sorted(model[False].items())
        assert book.bids.levels == want_bids
        assert book.asks.levels == want_asks
        assert book.checksum() == book_checksum(want_asks, want_bids)
        for n in (2, depth):  # cached top-N views must follow every change
            assert book.top(n) == (tuple(want_bids[:n]), tuple(want_asks[:n]))


wire_number = st.one_of(
    st.integers(-5, 10**20),
    st.decimals(
        min_value=-1, max_value=10**12, allow_nan=False, allow_infinity=False, places=12
    ).map(lambda d: format(d, "f")),
    st.sampled_from(["1e-5", "1E3", "00.10", "5.", ".5", "+1", "1_0", "", "abc", "1.0000000000"]),
)


@given(levels=st.lists(st.tuples(st.booleans(), wire_number, wire_number), max_size=8))
def test_c_and_python_sides_accept_and_refuse_the_same_input(
    levels: list[tuple[bool, object, object]],
) -> None:
    books = [OrderBook("T/USD", 10, 4, 8, accelerated=flag) for flag in (False, True)]
    outcomes = []
    for book in books:
        try:
            book.apply_update(
                [lv(p, q) for b, p, q in levels if b],  # type: ignore[arg-type]
                [lv(p, q) for b, p, q in levels if not b],
            )  # type: ignore[arg-type]
            outcomes.append(("ok", book.bids.levels, book.asks.levels, book.checksum()))
        except WireNumberError:
            outcomes.append(("refused",))
    assert outcomes[0] == outcomes[1]


def test_the_fixture_really_switches_implementation(accelerated: bool) -> None:
    side = OrderBook("T/USD", 10, 2, 2).bids
    assert (type(side).__module__ == "gal_friday.kraken._cbook") is accelerated
