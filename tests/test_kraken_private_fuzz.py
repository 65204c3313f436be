"""Fuzz test of the private channel: 100,000 mutated, batched ``executions`` and ``balances``
messages (real shapes with entries dropped, duplicated, reordered, their types swapped,
nulls, unknown enums, huge or negative numbers, truncated JSON) through the venue's message
handler, without a socket. Invariants: every fill the tracker applies is reported exactly
once, no exception escapes the handler, and every entry the handler cannot use is caught by
the reader (none reaches the tracker's last-resort guard). Seeded, so a failure repeats."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import pytest
from pydantic import SecretStr

from gal_friday.config import Credentials, KrakenSettings
from gal_friday.events import ExecutionReportEvent, OrderType, Side
from gal_friday.execution.venue import OrderRequest
from gal_friday.kraken.executions import Applied, ExecutionTracker
from gal_friday.kraken.schemas import PrivateMessageError
from gal_friday.kraken.trading import KrakenTradingVenue

PAIRS = ("XRP/USD", "DOGE/USD")
MESSAGES = 100_000
SEED = 20261203
CREDS = Credentials(
    api_key=SecretStr("fuzz-key"), api_secret=SecretStr(base64.b64encode(b"fuzz").decode())
)
ORDERS = [f"O-{n}" for n in range(12)]  # exchange order ids; the first half are ours


class FillIds:
    """Fill ids: mostly new ones, a third of them repeats of recent ones (a fill streamed
    twice, or seen again in a snapshot or over REST)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.recent: list[tuple[str, int]] = [("T-0", 0)]
        self.next = 1

    def pick(self) -> tuple[str, int]:
        if self.rng.random() < 0.33:
            return self.rng.choice(self.recent[-50:])
        ids = (f"T-{self.next}", self.next)
        self.next += 1
        self.recent.append(ids)
        del self.recent[:-100]
        return ids


class FakeRest:
    """The private REST calls a reconciliation makes, answered from the same small pools so
    REST fills collide with streamed ones (the dedupe is part of the invariant)."""

    def __init__(self, rng: random.Random, fill_ids: FillIds) -> None:
        self.rng = rng
        self.fill_ids = fill_ids
        self.base_url = "http://fuzz.invalid"

    async def query_orders(self, txids: list[str]) -> dict[str, dict[str, Any]]:
        status = self.rng.choice(["open", "closed", "canceled", "pending", None])
        return {t: {"status": status, "vol_exec": "0", "opentm": "1700000000"} for t in txids}

    async def trades_history(self, start: int) -> dict[str, dict[str, Any]]:
        return {
            self.rng.choice(self.fill_ids.recent)[0]: {
                "ordertxid": self.rng.choice(ORDERS),
                "vol": str(self.rng.choice([1, 5, "0.5"])),
                "price": "0.5",
                "fee": "0.01",
                "time": "1700000001.5",
            }
            for _ in range(self.rng.randrange(3))
        }

    async def open_orders(self, **kw: Any) -> dict[str, dict[str, Any]]:
        return {}

    async def closed_orders(self, **kw: Any) -> dict[str, dict[str, Any]]:
        return {}

    async def close(self) -> None:
        pass


# --- real-shaped entries -----------------------------------------------------------------------


def _order(rng: random.Random) -> dict[str, Any]:
    oid = rng.choice(ORDERS)
    return {
        "order_id": oid,
        "cl_ord_id": f"c-{oid}",
        "symbol": rng.choice(PAIRS),
        "side": rng.choice(["buy", "sell"]),
        "order_type": rng.choice(["limit", "market", "stop-loss", "take-profit"]),
        "order_qty": rng.choice([20, "100.5", 1000]),
        "limit_price": 0.5,
        "timestamp": "2026-12-03T08:00:00.000001Z",
    }


def _execution(rng: random.Random, snapshot: bool, fill_ids: FillIds) -> dict[str, Any]:
    entry = _order(rng)
    if snapshot:
        entry.update(
            order_status=rng.choice(["new", "partially_filled", "pending_new"]),
            cum_qty=rng.choice([0, 5, 20]),
        )
        return entry
    kind = rng.choice(["pending_new", "new", "trade", "trade", "trade", "filled", "canceled"])
    entry.update(exec_type=kind, order_status=kind)
    if kind == "new":  # the docs' sparse shape
        entry = {k: entry[k] for k in ("order_id", "exec_type", "order_status", "timestamp")}
    elif kind == "trade":
        exec_id, trade_id = fill_ids.pick()
        entry.update(
            exec_id=exec_id,
            trade_id=trade_id,
            last_qty=rng.choice([1, 5, "0.5"]),
            last_price=0.5,
            order_status=rng.choice(["partially_filled", "filled"]),
            cum_qty=rng.choice([5, 20]),
            avg_price=0.5,
            fees=[{"asset": rng.choice(["USD", "XRP"]), "qty": 0.01}],
        )
    elif kind in ("filled", "canceled"):
        entry.update(cum_qty=rng.choice([0, 5, 20]), reason="User requested")
    return entry


def _balance(rng: random.Random, snapshot: bool, fill_ids: FillIds) -> dict[str, Any]:
    asset = rng.choice(["USD", "XRP", "DOGE", "BTC"])
    if snapshot:
        wallets = [{"type": "spot", "id": "main", "balance": rng.choice([0, 12.5, 1000])}]
        return {"asset": asset, "balance": 12.5, "wallets": wallets}
    return {"asset": asset, "wallet_type": "spot", "wallet_id": "main", "balance": 5, "fee": 0}


# --- mutations ---------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None,
    "",
    "sideways",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999999999",
    -5,
    -0.0,
    0,
    10**40,
    "9" * 60,
    1e308,
    True,
    [],
    {},
    [1, 2],
    {"price": "x"},
    "2026-13-45T99:99:99Z",
]
ENUM_FIELDS = ("side", "exec_type", "order_status", "order_type", "symbol")


def _mutate_entry(rng: random.Random, entry: dict[str, Any]) -> Any:
    roll = rng.random()
    if roll < 0.04:
        return rng.choice(ODD_VALUES)  # the entry itself is not an object
    entry = dict(entry)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.random()
        field = rng.choice(list(entry) or ["order_id"])
        if kind < 0.3:
            entry[field] = rng.choice(ODD_VALUES)
        elif kind < 0.5:
            entry.pop(field, None)
        elif kind < 0.7:
            entry[rng.choice(ENUM_FIELDS)] = rng.choice(["unknown", "BUY", "amended", 7, None])
        elif kind < 0.85:
            value = entry.get(field)
            entry[field] = str(value) if not isinstance(value, str) else [value]
        else:
            entry[field] = rng.choice([-1, -0.5, 10**20, "1e30", "-3"])
    return entry


def _message(rng: random.Random, fill_ids: FillIds) -> str:
    """One batched message, mutated in at least one way."""
    channel = "executions" if rng.random() < 0.8 else "balances"
    snapshot = rng.random() < 0.1
    make: Callable[[random.Random, bool, FillIds], dict[str, Any]] = (
        _execution if channel == "executions" else _balance
    )
    entries: list[Any] = [make(rng, snapshot, fill_ids) for _ in range(rng.randrange(2, 7))]
    msg: dict[str, Any] = {"channel": channel, "type": "snapshot" if snapshot else "update"}
    truncate = False
    mutated = False
    while not mutated:
        if rng.random() < 0.3:
            entries.append(dict(rng.choice(entries)))  # a duplicate
            mutated = True
        if rng.random() < 0.3:
            rng.shuffle(entries)
            mutated = True
        if rng.random() < 0.2 and len(entries) > 1:
            entries.pop(rng.randrange(len(entries)))
            mutated = True
        if rng.random() < 0.6:
            for i in rng.sample(range(len(entries)), rng.randrange(1, len(entries) + 1)):
                entries[i] = _mutate_entry(rng, entries[i])
            mutated = True
        if rng.random() < 0.02:
            msg["type"] = rng.choice(ODD_VALUES)
            mutated = True
        if rng.random() < 0.03:
            truncate = mutated = True
    msg["data"] = entries if rng.random() > 0.03 else rng.choice(ODD_VALUES)
    text = json.dumps(msg)
    return text[: rng.randrange(len(text))] if truncate else text  # truncated JSON


# --- the run -----------------------------------------------------------------------------------


def _venue(rng: random.Random, fill_ids: FillIds) -> KrakenTradingVenue:
    rest = cast(Any, FakeRest(rng, fill_ids))
    return KrakenTradingVenue(KrakenSettings(), CREDS, pairs=PAIRS, rest=rest, dms_timeout_s=0)


class Ledger:
    """The fills the tracker applied, and the reports the venue published."""

    def __init__(self, tracker: ExecutionTracker) -> None:
        self.applied: list[ExecutionReportEvent] = []
        self.published: list[ExecutionReportEvent] = []
        self.guarded: list[str] = []
        fill, apply = tracker._fill, tracker.apply

        def recorded_fill(*args: Any, **kw: Any) -> ExecutionReportEvent | None:
            report = fill(*args, **kw)
            if report is not None:
                self.applied.append(report)
            return report

        def recorded_apply(msg: Any) -> Applied:
            applied = apply(msg)
            self.guarded += [u.problem for u in applied.unreadable if "not applied" in u.problem]
            return applied

        tracker._fill = recorded_fill  # type: ignore[method-assign]
        tracker.apply = recorded_apply  # type: ignore[method-assign]

    async def on_report(self, report: ExecutionReportEvent) -> None:
        self.published.append(report)


def _register_ours(venue: KrakenTradingVenue) -> None:
    """Our half of the pool, as the venue registers what it submits."""
    for oid in ORDERS[: len(ORDERS) // 2]:
        coid = f"c-{oid}"
        if coid not in venue.tracker.orders:
            order = OrderRequest(coid, "XRP/USD", Side.BUY, OrderType.LIMIT, Decimal(20), None)
            venue.tracker.register(order)
            venue.tracker.set_order_id(coid, oid)


async def _run(seed: int, messages: int) -> tuple[Ledger, KrakenTradingVenue]:
    rng = random.Random(seed)
    fill_ids = FillIds(rng)
    venue = _venue(random.Random(seed + 1), fill_ids)
    ledger = Ledger(venue.tracker)
    venue._on_report = ledger.on_report
    for n in range(messages):
        if n % 500 == 0:
            _register_ours(venue)
        await venue._handle(_message(rng, fill_ids))
        if venue._tasks and n % 50 == 0:  # let the REST look-ups run now and then
            await asyncio.gather(*list(venue._tasks))
    await asyncio.gather(*list(venue._tasks))
    return ledger, venue


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Warnings for hundreds of thousands of bad entries are the point, not the output."""
    caplog.set_level(logging.ERROR, logger="gal_friday.kraken.trading")


@pytest.mark.usefixtures("quiet")
async def test_every_applied_fill_is_reported_exactly_once_and_nothing_escapes() -> None:
    ledger, venue = await _run(SEED, MESSAGES)
    fills = [r for r in ledger.published if r.last_fill_qty is not None]
    assert len(ledger.applied) > 1000  # the fuzz reached the fills, not only the errors
    assert [id(r) for r in fills] == [id(r) for r in ledger.applied]  # each once, in order
    assert len({id(r) for r in fills}) == len(fills)
    assert ledger.guarded == []  # every unusable entry was caught by the reader
    assert venue.stats["unreadable_entries"] > 10_000
    assert venue.errors["decode"] > 1000  # truncated frames and non-list data


@pytest.mark.usefixtures("quiet")
async def test_the_fuzz_catches_a_fill_lost_beside_a_bad_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The invariant can fail: with the old all-or-nothing handling (a message is dropped
    when any entry raises, after the tracker applied the entries before it) it does."""
    original = ExecutionTracker.apply

    def all_or_nothing(self: ExecutionTracker, msg: Any) -> Applied:
        applied = original(self, msg)
        if applied.unreadable:
            raise PrivateMessageError("an entry the parser does not know")
        return applied

    monkeypatch.setattr(ExecutionTracker, "apply", all_or_nothing)
    with pytest.raises(AssertionError):
        ledger, _ = await _run(SEED, 2_000)
        fills = [r for r in ledger.published if r.last_fill_qty is not None]
        assert [id(r) for r in fills] == [id(r) for r in ledger.applied]
