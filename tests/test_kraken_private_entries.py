"""Each entry of a batched private message handled on its own: an entry the adapter cannot
read (an unknown side, a null, wrong types) is counted and its order looked up over REST,
and it never costs the readable entries beside it. Sans-IO first (the tracker), then the
venue against the Kraken-protocol simulator over loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from gal_friday.config import Credentials, KrakenSettings
from gal_friday.events import ExecutionReportEvent, OrderStatus, OrderType, Side
from gal_friday.execution.venue import OrderRequest
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.executions import ExecutionTracker
from gal_friday.kraken.schemas import decode_frame, executions_message
from gal_friday.kraken.trading import KrakenTradingVenue
from gal_friday.sim.server import SimExchange

PAIRS = ("XRP/USD", "DOGE/USD")
SECRET = base64.b64encode(b"fake kraken secret for tests only").decode()
D = Decimal


def _frame(data: list[Any], kind: str = "update") -> str:
    return json.dumps({"channel": "executions", "type": kind, "data": data})


def _feed(tracker: ExecutionTracker, text: str) -> Any:
    frame = decode_frame(text)
    assert frame is not None
    return tracker.apply(executions_message(frame))


PENDING = {
    "order_id": "O1",
    "cl_ord_id": "c1",
    "exec_type": "pending_new",
    "order_status": "pending_new",
    "symbol": "XRP/USD",
    "side": "buy",
    "order_type": "limit",
    "order_qty": 20,
    "limit_price": 0.5,
}
FILL = {
    "order_id": "O1",
    "exec_id": "T1",
    "exec_type": "trade",
    "trade_id": 1,
    "symbol": "XRP/USD",
    "side": "buy",
    "last_qty": 5,
    "last_price": 0.5,
    "order_status": "partially_filled",
    "cum_qty": 5,
    "fees": [{"asset": "USD", "qty": 0.01}],
}


# --- sans-IO: the tracker ----------------------------------------------------------------------


def test_a_fill_followed_by_an_unknown_entry_is_reported_and_a_snapshot_does_not_repeat_it() -> (
    None
):
    tracker = ExecutionTracker(PAIRS)
    _feed(tracker, _frame([PENDING]))
    stranger = {**PENDING, "order_id": "O2", "cl_ord_id": "c2", "side": "sideways"}
    applied = _feed(tracker, _frame([FILL, stranger, None]))
    fills = [r for r in applied.reports if r.last_fill_qty is not None]
    assert [(r.client_order_id, r.last_fill_qty) for r in fills] == [("c1", D(5))]
    assert [(e.order_id, e.cl_ord_id) for e in applied.unreadable] == [("O2", "c2"), (None, None)]
    assert "unknown side" in applied.unreadable[0].problem
    snapshot = {**PENDING, "exec_type": None, "order_status": "partially_filled", "cum_qty": 5}
    again = _feed(tracker, _frame([snapshot], "snapshot"))
    assert [r for r in again.reports if r.last_fill_qty is not None] == []
    assert tracker.orders["c1"].filled == D(5)


def test_an_unreadable_entry_changes_nothing_of_its_order() -> None:
    tracker = ExecutionTracker(PAIRS)
    _feed(tracker, _frame([PENDING]))
    broken = {**FILL, "order_qty": 99, "last_qty": None}  # a trade without its quantity
    applied = _feed(tracker, _frame([broken]))
    assert applied.reports == [] and applied.unreadable[0].order_id == "O1"
    order = tracker.orders["c1"]
    assert (order.qty, order.filled) == (D(20), D(0))
    # its fill, read later (REST or a repeat), is applied once
    assert len(_feed(tracker, _frame([FILL])).reports) == 1
    assert _feed(tracker, _frame([FILL])).reports == []


def test_an_unknown_order_is_adopted_from_rest_with_its_past_fills_as_baseline() -> None:
    tracker = ExecutionTracker(PAIRS)
    info = {
        "status": "open",
        "cl_ord_id": "old-run",
        "vol": "30",
        "vol_exec": "10",
        "price": "0.5",
        "opentm": "1700000000.1",
        "descr": {"pair": "XRPUSD", "type": "sell", "ordertype": "limit", "price": "0.6"},
    }
    report = tracker.adopt_rest_order("O9", info)
    assert report is not None and report.status is OrderStatus.PARTIALLY_FILLED
    assert (report.client_order_id, report.filled_qty, report.last_fill_qty) == (
        "old-run",
        D(10),
        None,
    )
    assert tracker.find("O9", None) is tracker.orders["old-run"]
    other = {**info, "descr": {**info["descr"], "pair": "XBTUSD"}}
    assert tracker.adopt_rest_order("O8", other) is None  # not a pair of ours


# --- the venue against the simulator -----------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange()
    await exchange.start()
    exchange.private.add_key("sim-key", SECRET)
    yield exchange
    await exchange.stop()


Rewrite = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _rewrite_executions(sim: SimExchange, rewrite: Rewrite) -> None:
    """Make the simulator send each ``executions`` entry as ``rewrite`` returns it (none, one
    or several entries), as an exchange that sends something the adapter cannot read."""
    listeners = sim.trading.listeners
    original = listeners[0]

    def listener(channel: str, items: list[dict[str, Any]]) -> None:
        if channel == "executions":
            items = [out for item in items for out in rewrite(item)]
        original(channel, items)

    listeners[0] = listener


class Lookups:
    """Records the REST look-ups the venue makes (QueryOrders by order id)."""

    def __init__(self, venue: KrakenTradingVenue) -> None:
        self.order_ids: list[str] = []
        query = venue.rest.query_orders

        async def recorded(txids: list[str]) -> dict[str, dict[str, Any]]:
            self.order_ids.extend(txids)
            return await query(txids)

        venue.rest.query_orders = recorded  # type: ignore[method-assign]


async def _venue(sim: SimExchange) -> tuple[KrakenTradingVenue, list[ExecutionReportEvent]]:
    reports: list[ExecutionReportEvent] = []

    async def on_report(report: ExecutionReportEvent) -> None:
        reports.append(report)

    settings = KrakenSettings(
        ws_private_url=sim.ws_auth_url,
        rest_url=sim.rest_url,
        request_timeout_s=2.0,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.05,
        reconnect_jitter=0.0,
    )
    creds = Credentials(api_key=SecretStr("sim-key"), api_secret=SecretStr(SECRET))
    venue = KrakenTradingVenue(settings, creds, pairs=PAIRS, nonce=NonceSource(), dms_timeout_s=0)
    await venue.start(on_report)
    return venue, reports


async def test_a_fill_beside_an_entry_for_an_unknown_order_is_published_and_kept(
    sim: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's case: a fill for our order, then an entry the parser does not know (an
    unknown side, a null). The fill must be published, once, and a snapshot not repeat it."""
    caplog.set_level(logging.DEBUG, logger="gal_friday.kraken")
    venue, reports = await _venue(sim)
    try:
        order = OrderRequest("c1", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.10000"))
        oid = await venue.submit(order)
        await _until(lambda: len(reports) >= 2)  # submitted, acknowledged
        fill = {**FILL, "order_id": oid}
        stranger = {**PENDING, "order_id": "O-STRANGER", "cl_ord_id": "c2", "side": "sideways"}
        await venue._handle(_frame([fill, stranger, None]))
        snapshot = {**PENDING, "order_id": oid, "exec_type": None, "cum_qty": 5}
        await venue._handle(_frame([{**snapshot, "order_status": "partially_filled"}], "snapshot"))
        await _settled(venue)
        fills = _fills(reports)
        assert [(r.client_order_id, r.last_fill_qty, r.filled_qty) for r in fills] == [
            ("c1", D(5), D(5))
        ]
        assert venue.stats["unreadable_entries"] == 2
        assert venue.connected
        logged = [r for r in caplog.records if r.getMessage().startswith("unreadable")]
        assert [(r.order_id, r.cl_ord_id) for r in logged] == [  # type: ignore[attr-defined]
            ("O-STRANGER", "c2"),
            (None, None),
        ]
        text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
        assert venue._token and venue._token not in text and SECRET not in text
    finally:
        await venue.stop()


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):  # 5 s
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _fills(reports: list[ExecutionReportEvent]) -> list[ExecutionReportEvent]:
    return [r for r in reports if r.last_fill_qty is not None]


async def _settled(venue: KrakenTradingVenue) -> None:
    """Every look-up the venue started has finished."""
    await _until(lambda: not venue._tasks)


async def test_a_fill_beside_an_unknown_entry_is_reported_once_and_the_stranger_looked_up(
    sim: SimExchange,
) -> None:
    def add_a_stranger(item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("exec_type") != "trade":
            return [item]
        return [item, {**item, "exec_id": "TX-UNKNOWN", "side": "sideways"}]

    _rewrite_executions(sim, add_a_stranger)
    venue, reports = await _venue(sim)
    lookups = Lookups(venue)
    try:
        oid = await venue.submit(
            OrderRequest("entry1", "XRP/USD", Side.BUY, OrderType.MARKET, D(20))
        )
        await _until(lambda: bool(reports) and reports[-1].status is OrderStatus.FILLED)
        await _settled(venue)
        assert sum((r.last_fill_qty or D(0)) for r in _fills(reports)) == D(20)
        assert venue.stats["unreadable_entries"] >= 1
        assert oid in lookups.order_ids
        sim.drop_connections()  # the reconnect's snapshot brings nothing twice
        await _until(lambda: venue.stats["connections"] == 2 and venue.connected)
        await _settled(venue)
        assert sum((r.last_fill_qty or D(0)) for r in _fills(reports)) == D(20)
        assert [r.status for r in reports].count(OrderStatus.FILLED) == 1
    finally:
        await venue.stop()


async def test_a_fill_whose_only_news_is_unreadable_comes_back_over_rest(
    sim: SimExchange,
) -> None:
    def break_the_fill(item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("exec_type") == "filled":
            return []  # the unreadable trade is the only news of the fill
        if item.get("exec_type") == "trade":
            return [{**item, "last_qty": None}]
        return [item]

    _rewrite_executions(sim, break_the_fill)
    venue, reports = await _venue(sim)
    lookups = Lookups(venue)
    try:
        oid = await venue.submit(
            OrderRequest("entry2", "XRP/USD", Side.BUY, OrderType.MARKET, D(20))
        )
        await _until(lambda: bool(reports) and reports[-1].status is OrderStatus.FILLED)
        await _settled(venue)
        assert oid in lookups.order_ids
        fills = _fills(reports)
        assert sum((r.last_fill_qty or D(0)) for r in fills) == D(20)
        assert all(r.client_order_id == "entry2" and r.exchange_order_id == oid for r in fills)
        assert venue.stats["unreadable_entries"] >= 1
    finally:
        await venue.stop()


async def test_an_unreadable_balances_entry_is_counted_and_the_others_kept(
    sim: SimExchange,
) -> None:
    venue, _ = await _venue(sim)
    try:
        frame = (
            '{"channel":"balances","type":"update","data":[{"asset":"USD","balance":"much"},'
            '{"asset":"XRP","balance":7,"wallet_type":"spot","wallet_id":"main"}]}'
        )
        await venue._handle(frame)
        assert venue.ws_balances[("XRP", "spot", "main")] == D(7)
        assert venue.stats["unreadable_entries"] == 1
        assert venue.connected
    finally:
        await venue.stop()


async def test_a_burst_of_unreadable_entries_costs_one_look_up_not_one_each(
    sim: SimExchange,
) -> None:
    venue, reports = await _venue(sim)
    lookups = Lookups(venue)
    try:
        order = OrderRequest("c1", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.10000"))
        oid = await venue.submit(order)
        await _until(lambda: len(reports) >= 2)
        for _ in range(200):
            await venue._handle(_frame([{"order_id": oid, "cum_qty": "lots"}]))
        await _settled(venue)
        assert venue.stats["unreadable_entries"] == 200
        assert lookups.order_ids == [oid]  # QueryOrders once, for the 200 of them
    finally:
        await venue.stop()


async def test_an_unreadable_entry_naming_no_order_looks_up_every_working_order(
    sim: SimExchange,
) -> None:
    venue, reports = await _venue(sim)
    lookups = Lookups(venue)
    try:
        oids = set()
        for coid in ("w1", "w2"):
            order = OrderRequest(coid, "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.1"))
            oids.add(await venue.submit(order))
        await _until(lambda: len(reports) >= 4)
        await venue._handle(_frame([{"exec_type": "trade", "last_qty": None}]))
        await venue._handle('{"channel":"executions","type":"update","data":[{"ord')  # cut off
        await _settled(venue)
        assert set(lookups.order_ids) == oids
        assert venue.stats["unreadable_entries"] == 1 and venue.errors["decode"] == 1
    finally:
        await venue.stop()


async def test_an_unreadable_entry_for_an_order_we_never_placed_is_adopted_from_rest(
    sim: SimExchange,
) -> None:
    venue, reports = await _venue(sim)
    try:
        # placed by an earlier run: the exchange has it, this venue's tracker does not
        oid = await venue.rest.add_order("XRP/USD", "buy", "limit", D(20), D("0.1"), "old-run")
        await _until(lambda: venue.tracker.find(oid, None) is not None)  # the stream adopts it
        venue.tracker.orders.clear()  # forget it, as a restarted bot would
        venue.tracker._by_oid.clear()
        reports.clear()
        await venue._handle(_frame([{"order_id": oid, "side": "sideways"}]))
        await _settled(venue)
        adopted = venue.tracker.find(oid, None)
        assert adopted is not None and adopted.client_order_id == "old-run"
        assert [(r.client_order_id, r.status, r.pair) for r in reports] == [
            ("old-run", OrderStatus.ACKNOWLEDGED, "XRP/USD")
        ]
    finally:
        await venue.stop()


def test_a_fill_that_introduces_an_order_counts_once_in_its_filled_quantity() -> None:
    """An earlier run's order first heard of in its trade: cum_qty already includes it."""
    tracker = ExecutionTracker(PAIRS)
    first = {**FILL, "order_id": "O5", "cl_ord_id": "old", "order_type": "limit"}
    applied = _feed(tracker, _frame([{**first, "order_qty": 20, "cum_qty": 5, "cum_cost": 2.5}]))
    (report,) = applied.reports
    assert (report.filled_qty, report.last_fill_qty, report.avg_price) == (D(5), D(5), D("0.5"))


async def test_a_look_up_that_fails_on_its_answer_does_not_stop_the_others(
    sim: SimExchange,
) -> None:
    venue, reports = await _venue(sim)
    lookups = Lookups(venue)
    query = venue.rest.query_orders

    async def chokes_on_one(txids: list[str]) -> dict[str, dict[str, Any]]:
        if txids == ["O-UNREADABLE-ANSWER"]:
            raise RuntimeError("an answer the adapter cannot read")
        return await query(txids)

    venue.rest.query_orders = chokes_on_one  # type: ignore[method-assign]
    try:
        order = OrderRequest("c1", "XRP/USD", Side.BUY, OrderType.LIMIT, D(20), D("0.10000"))
        oid = await venue.submit(order)
        await _until(lambda: len(reports) >= 2)
        await venue._handle(
            _frame([{"order_id": "O-UNREADABLE-ANSWER", "side": 1}, {"order_id": oid, "side": 2}])
        )
        await _settled(venue)
        assert oid in lookups.order_ids
        assert venue.stats["unreadable_entries"] == 2
    finally:
        await venue.stop()
