"""What a restart remembers: read back from the audit store before the first event.

A run that stops (a clean stop, SIGTERM, a crash) must not forget what protects the money:

* **the trading state**: a HALT (or REDUCING) holds, with its reason and source, until an
  operator resumes it, across any number of restarts (:func:`remembered_state`);
* **the risk baselines**: peak equity, the day's and the week's start equity and the loss
  counter carry on, so a restart never resets a drawdown limit or the loss streak
  (:func:`portfolio_memory`);
* **the day so far**: the daily summary of the current UTC day is rebuilt from the fills and
  round trips the store holds, not from what one run saw (:func:`day_figures`).

The writer side is the :class:`~gal_friday.store.ledger.AuditLedger` (halts, equity snapshots
with the baselines, fills, trades); this module only reads. Every read raises
:class:`~gal_friday.store.base.StoreUnavailable` when the database cannot answer: the caller
decides what an unknown memory means (a live start stays HALTED).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gal_friday.domain import OpenTrip, PortfolioMemory, PortfolioSnapshot
from gal_friday.events import TradingState, TradingStateChangedEvent
from gal_friday.store.base import Store, decode_row
from gal_friday.store.schema import TABLES

ZERO = Decimal(0)
NS_PER_DAY = 86_400 * 1_000_000_000
_STATE_OF_KIND = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING}


async def remembered_state(store: Store) -> TradingStateChangedEvent | None:
    """The HALT or REDUCING the last state change left in force (None when the last one was
    a resume, or there was none), as an announcement to repeat at start (``restored``)."""
    rows = await store.fetch(
        "SELECT kind, reason, source, ts_ns FROM halts WHERE kind IN ('halt', 'reduce', "
        "'resume') ORDER BY ts_ns DESC, id DESC LIMIT 1"
    )
    if not rows or rows[0]["kind"] not in _STATE_OF_KIND:
        return None
    row = rows[0]
    state = _STATE_OF_KIND[str(row["kind"])]
    return TradingStateChangedEvent(
        state,
        state,
        str(row["reason"] or ""),
        str(row["source"] or ""),
        int(row["ts_ns"]),
        restored=True,
    )


async def portfolio_memory(store: Store) -> PortfolioMemory:
    """The previous run's last equity snapshot (its realised P&L and fees as every recorded
    fill adds them up: snapshots are written every few seconds, fills at once), its open
    round trips and the loss streak."""
    return PortfolioMemory(
        last=await _last_snapshot(store),
        trips=tuple(_trip(row) for row in await store.open_trades()),
        consecutive_losses=await _loss_streak(store),
    )


def account_of(memory: PortfolioMemory, quote: str = "USD") -> dict[str, Decimal]:
    """The balances the previous run ended with (its cash, the quantity of each open round
    trip): what a paper venue, whose account lives only in memory, carries on from."""
    cash = memory.last.cash if memory.last is not None else ZERO
    return {quote: cash, **{t.pair.split("/")[0]: t.qty for t in memory.trips if t.qty > 0}}


async def _last_snapshot(store: Store) -> PortfolioSnapshot | None:
    rows = await store.fetch("SELECT * FROM equity_snapshots ORDER BY ts_ns DESC LIMIT 1")
    if not rows:
        return None
    r = decode_row(TABLES["equity"], rows[0])
    equity = r["equity"]
    fills = await store.fetch("SELECT side, qty, price, fee, realised_pnl, ts_ns FROM fills")
    return PortfolioSnapshot(
        ts_ns=r["ts_ns"],
        cash=r["cash"] + _cash_since(fills, r["ts_ns"]),
        free_cash=r["free_cash"],
        positions=(),
        equity=equity,
        peak_equity=r["peak_equity"] or equity,
        day_start_equity=r["day_start_equity"] or equity,  # rows written before schema v2
        week_start_equity=r["week_start_equity"] or equity,
        realised_pnl=sum((_money(f["realised_pnl"]) for f in fills), ZERO),
        fees_paid=sum((_money(f["fee"]) for f in fills), ZERO),
        consecutive_losses=r["consecutive_losses"] or 0,
    )


def _cash_since(fills: list[dict[str, Any]], ts_ns: int) -> Decimal:
    """What the fills after a snapshot did to its cash (snapshots are written every few
    seconds, fills at once): a buy costs qty x price + fee, a sell yields qty x price - fee."""
    total = ZERO
    for f in fills:
        if int(f["ts_ns"]) > ts_ns:
            notional = _money(f["qty"]) * _money(f["price"])
            total += (
                -notional - _money(f["fee"]) if f["side"] == "buy" else notional - _money(f["fee"])
            )
    return total


def _trip(row: dict[str, Any]) -> OpenTrip:
    return OpenTrip(
        pair=row["pair"],
        trade_id=row["trade_id"],
        qty=row["open_qty"],
        avg_entry=row["open_avg"],
        entry_fees=row["open_entry_fees"] or ZERO,
        pnl=row["pnl"] or ZERO,
        opened_ts_ns=row["entry_ts_ns"],
    )


async def _loss_streak(store: Store, limit: int = 1000) -> int:
    """Closed round trips that lost (fees included), counted back from the newest until the
    first that did not: the PortfolioManager's ``consecutive_losses`` rule."""
    rows = await store.fetch(
        "SELECT pnl FROM trades WHERE status = 'closed' ORDER BY exit_ts_ns DESC LIMIT ?", limit
    )
    streak = 0
    for row in rows:
        if Decimal(str(row["pnl"])) >= 0:
            break
        streak += 1
    return streak


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One UTC day as the store's fills and round trips add it up."""

    day: int  # days since the epoch
    start_equity: Decimal | None
    end_equity: Decimal | None
    realised: Decimal
    fees: Decimal
    trades: int
    wins: int
    losses: int


async def day_figures(store: Store, day: int) -> DayFigures | None:
    """The daily summary of ``day`` rebuilt from the store: realised P&L and fees of its
    fills, round trips closed in it (a win is >= 0 after fees), and its first and last
    equity snapshots (the recorded start equity when the summary row has one); None when the
    store holds nothing of that day."""
    start, end = day * NS_PER_DAY, (day + 1) * NS_PER_DAY
    fills = await store.fetch(
        "SELECT realised_pnl, fee FROM fills WHERE ts_ns >= ? AND ts_ns < ?", start, end
    )
    trips = await store.fetch(
        "SELECT pnl FROM trades WHERE status = 'closed' AND exit_ts_ns >= ? AND exit_ts_ns < ?",
        start,
        end,
    )
    pnls = [Decimal(str(t["pnl"])) for t in trips]
    start_equity = await _day_start_equity(store, start, end)
    end_equity = await _equity_at(store, start, end, "DESC")
    if not fills and not trips and start_equity is None and end_equity is None:
        return None
    return DayFigures(
        day=day,
        start_equity=start_equity,
        end_equity=end_equity,
        realised=sum((_money(f["realised_pnl"]) for f in fills), ZERO),
        fees=sum((_money(f["fee"]) for f in fills), ZERO),
        trades=len(pnls),
        wins=sum(1 for p in pnls if p >= 0),
        losses=sum(1 for p in pnls if p < 0),
    )


async def _day_start_equity(store: Store, start: int, end: int) -> Decimal | None:
    rows = await store.fetch(
        "SELECT start_equity FROM daily_summaries WHERE day_start_ts_ns = ?", start
    )
    if rows and rows[0]["start_equity"] is not None:
        return Decimal(str(rows[0]["start_equity"]))
    return await _equity_at(store, start, end, "ASC")


async def _equity_at(store: Store, start: int, end: int, order: str) -> Decimal | None:
    rows = await store.fetch(
        f"SELECT equity FROM equity_snapshots WHERE ts_ns >= ? AND ts_ns < ? "
        f"ORDER BY ts_ns {order} LIMIT 1",
        start,
        end,
    )
    return Decimal(str(rows[0]["equity"])) if rows else None


def _money(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(str(value))
