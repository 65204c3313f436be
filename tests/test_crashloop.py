"""The crash loop (``benchmarks/crashloop.py``): what its comparison counts, proved on small
hand-made accounts and stores, and a run of 10 kills of the real bot against the simulator
that must lose, duplicate and leave naked nothing. The run starts when collection ends and
trades while the other tests run (it mostly waits for candles to close); its test runs last."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import itertools

from conftest import CRASH_LOOP_KILLS, CrashLoop
from crashloop import COUNTS, compare, plan

ZERO_BALANCES = {"USD": "10000", "XRP": "0", "DOGE": "0"}


def order(coid: str | None, side: str = "buy", kind: str = "market", qty: str = "100",
          status: str = "closed", vol_exec: str = "100") -> dict[str, Any]:  # fmt: skip
    return {"order_id": f"O-{coid}", "cl_ord_id": coid, "side": side, "order_type": kind,
            "qty": qty, "vol_exec": vol_exec, "status": status}  # fmt: skip


def fill(coid: str, side: str, qty: str, cost: str, fee: str = "0") -> dict[str, Any]:
    return {"trade_id": f"T-{coid}-{qty}", "order_id": f"O-{coid}", "cl_ord_id": coid,
            "side": side, "qty": qty, "cost": cost, "fee": fee}  # fmt: skip


def stored(coid: str, trade: str = "t1", pair: str = "XRP/USD") -> dict[str, Any]:
    return {"client_order_id": coid, "trade_id": trade, "pair": pair}


def store_fill(coid: str, qty: str) -> dict[str, Any]:
    return {"client_order_id": coid, "qty": qty}


def round_trip() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A bought-and-sold round trip both sides agree on."""
    account = {
        "balances": ZERO_BALANCES,
        "orders": [order("gfm1"), order("gfx1", side="sell")],
        "fills": [
            fill("gfm1", "buy", "100", "200", "0.8"),
            fill("gfx1", "sell", "100", "210", "0.84"),
        ],
    }
    store = {
        "orders": [stored("gfm1"), stored("gfx1")],
        "fills": [store_fill("gfm1", "100"), store_fill("gfx1", "100")],
        "trades": [{"trade_id": "t1", "status": "closed", "open_qty": "0", "pnl": "8.36"}],
        "positions": [{"pair": "XRP/USD", "qty": "0"}],
    }
    return account, store


def counts(account: dict[str, Any], store: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {name: len(keys) for name, keys in compare(account, store).sets.items()}


def test_a_round_trip_both_sides_agree_on_counts_nothing() -> None:
    assert counts(*round_trip()) == dict.fromkeys(COUNTS, 0)


def test_an_exchange_fill_missing_from_the_store_is_a_lost_fill() -> None:
    account, store = round_trip()
    store["fills"] = store["fills"][:1]
    assert counts(account, store)["lost_fills"] == 1


def test_a_fill_counted_twice_is_a_duplicate() -> None:
    account, store = round_trip()
    store["fills"].append(store_fill("gfx1", "100"))
    assert counts(account, store)["duplicated_fills"] == 1


def test_an_order_the_store_never_heard_of_is_unknown() -> None:
    account, store = round_trip()
    account["orders"].append(order("gfe9", kind="limit", status="canceled", vol_exec="0"))
    account["orders"].append(order(None, status="canceled", vol_exec="0"))
    assert counts(account, store)["unknown_orders"] == 2


def test_a_held_position_needs_its_own_stop_and_target_for_its_open_quantity() -> None:
    account, store = round_trip()
    account["balances"] = {**ZERO_BALANCES, "XRP": "100"}
    store["positions"] = [{"pair": "XRP/USD", "qty": "100"}]
    store["trades"].append({"trade_id": "t2", "status": "open", "open_qty": "100", "pnl": "0"})
    assert counts(account, store)["unprotected"] == 3  # no stop, no target, the pair uncovered
    store["orders"] += [stored("gfs2", "t1"), stored("gft2", "t2")]  # the stop is another trade's
    account["orders"] += [
        order("gfs2", "sell", "stop-loss", status="open", vol_exec="0"),
        order("gft2", "sell", "take-profit", status="open", vol_exec="0"),
    ]
    assert counts(account, store)["unprotected"] == 1  # t2's own stop is missing
    store["orders"][-2] = stored("gfs2", "t2")
    assert counts(account, store)["unprotected"] == 0


def test_a_store_position_unlike_the_exchange_balance_is_a_mismatch() -> None:
    account, store = round_trip()
    store["positions"] = [{"pair": "XRP/USD", "qty": "22006.46"}]
    assert counts(account, store)["position_mismatches"] == 1


def test_realised_pnl_must_be_what_the_exchange_fills_made_after_fees() -> None:
    account, store = round_trip()
    store["trades"][0]["pnl"] = "210"  # the whole exit value, as a lost entry fill booked it
    assert counts(account, store)["pnl_mismatches"] == 1
    store["trades"] = []
    assert counts(account, store)["pnl_mismatches"] == 1  # fills of a trade the store lacks


def test_the_kill_plan_puts_every_recovery_kill_right_after_another_kill() -> None:
    import random

    for kills in (5, 10, 50):
        kinds = plan(kills, random.Random(kills))
        assert len(kinds) == kills and kinds[0] != "recovery"
        assert kinds.count("order") == kills // 2
        assert kinds.count("recovery") == kinds.count("protection") == kills // 5
        assert all(a != "recovery" for a, b in itertools.pairwise(kinds) if b == "recovery")


@pytest.mark.beside_the_suite
def test_ten_kills_lose_duplicate_and_leave_naked_nothing(crash_loop: CrashLoop) -> None:
    code, out, err = crash_loop.result(timeout_s=1500)
    assert out.strip(), f"the crash loop printed nothing (exit {code}): {err[-3000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["kills"] == CRASH_LOOP_KILLS
    assert {name: result[name] for name in COUNTS} == dict.fromkeys(COUNTS, 0), err[-3000:]
    assert result["recoveries_failed"] == 0 and result["last_exit_code"] == 0
    assert result["exchange_fills"] >= 5 and result["round_trips"] >= 2  # it really traded
    assert Decimal(result["seconds"]) > 0
    assert code == 0
