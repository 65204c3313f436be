"""Crash recovery: the bot is killed with SIGKILL at random points of its orders' lives while
trading against a simulator in another process, and restarted each time. Afterwards: no fill
the exchange made is missing from the store, no order was sent twice, and the position the
store's fills add up to is the exchange's balance."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from crash_bot import settings as bot_settings
from pydantic import SecretStr

from gal_friday.config import Credentials
from gal_friday.execution.handler import role_of
from gal_friday.kraken.auth import NonceSource
from gal_friday.kraken.private import KrakenPrivateRest
from gal_friday.store import make_store
from gal_friday.store.audit import AuditWriter  # noqa: F401 - the bot's writer, same schema

HERE = Path(__file__).parent
KEY = "crash-test-key"
SECRET = base64.b64encode(bytes(range(100, 164))).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    return {
        **os.environ,
        "KRAKEN_API_KEY": KEY,
        "KRAKEN_API_SECRET": SECRET,
        "PYTHONPATH": str(HERE),
    }


def start_sim(port: int, cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gal_friday",
            "sim-exchange",
            "--port",
            str(port),
            "--seed",
            "5",
            "--rate",
            "60",
            "--log-level",
            "WARNING",
        ],
        cwd=cwd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("simulator did not start")


def start_bot(data: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "crash_bot.py"),
            str(data),
            f"ws://127.0.0.1:{port}/auth/v2",
            f"http://127.0.0.1:{port}",
            *extra,
        ],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def recovered_line(bot: subprocess.Popen[str]) -> dict[str, object]:
    assert bot.stdout is not None
    line = bot.stdout.readline()
    if not line:
        why = bot.stderr.read() if bot.stderr else ""
        raise AssertionError(f"bot died before recovering: {why}")
    result = json.loads(line)
    assert isinstance(result, dict)
    return result


async def exchange_view(port: int) -> tuple[dict[str, Decimal], dict[str, Decimal], list[str]]:
    """Balances, filled quantity per client order id, and every client order id sent."""
    rest = KrakenPrivateRest(
        f"http://127.0.0.1:{port}",
        Credentials(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET)),
        NonceSource(),
    )
    try:
        await rest.cancel_all()
        balances = await rest.balance()
        trades = await rest.trades_history()
        closed = await rest.closed_orders()
        opened = await rest.open_orders()
    finally:
        await rest.close()
    filled: dict[str, Decimal] = defaultdict(Decimal)
    orders = {**closed, **opened}
    for t in trades.values():
        coid = orders.get(t["ordertxid"], {}).get("cl_ord_id")
        if coid:
            filled[coid] += Decimal(str(t["vol"]))
    coids = [o.get("cl_ord_id") or "" for o in orders.values()]
    return {k: Decimal(str(v)) for k, v in balances.items()}, filled, coids


async def wait_for_working_orders(port: int, within_s: float = 5.0) -> None:
    rest = KrakenPrivateRest(
        f"http://127.0.0.1:{port}",
        Credentials(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET)),
        NonceSource(),
    )
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and not await rest.open_orders():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    finally:
        await rest.close()


async def store_view(data: Path) -> tuple[dict[str, Decimal], dict[str, str], Decimal]:
    s = bot_settings(str(data), "", "")
    store = make_store(s)
    try:
        rows = await store.fetch("SELECT client_order_id, side, qty FROM fills")
        orders = await store.fetch("SELECT client_order_id, signal_id FROM orders")
    finally:
        await store.close()
    filled: dict[str, Decimal] = defaultdict(Decimal)
    position = Decimal(0)
    for r in rows:
        qty = Decimal(str(r["qty"]))
        filled[str(r["client_order_id"])] += qty
        position += qty if r["side"] == "buy" else -qty
    return filled, {str(o["client_order_id"]): str(o["signal_id"]) for o in orders}, position


def test_kill_9_at_random_points_loses_no_fill_and_duplicates_no_order(tmp_path: Path) -> None:
    port = free_port()
    sim = start_sim(port, tmp_path)
    data = tmp_path / "data"
    rng = random.Random(20261125)
    lives: list[dict[str, object]] = []
    errors: list[str] = []
    try:
        for _ in range(5):
            bot = start_bot(data, port)
            result = recovered_line(bot)
            assert result["recovered"] is True, result
            lives.append(result)
            time.sleep(rng.uniform(0.3, 1.5))
            if rng.random() < 0.6:  # or wait until orders are working at the exchange
                asyncio.run(wait_for_working_orders(port))
                time.sleep(rng.uniform(0, 0.05))
            bot.send_signal(signal.SIGKILL)
            bot.wait(10)
            errors.append(bot.stderr.read() if bot.stderr else "")
        # A last life that only recovers, so the store learns what happened while it was dead.
        asyncio.run(exchange_view(port))  # cancels every order: nothing moves from here on
        final = start_bot(data, port, "--recover-only")
        result = recovered_line(final)
        assert result["recovered"] is True, result
        final.send_signal(signal.SIGTERM)
        assert final.wait(20) == 0, final.stderr.read() if final.stderr else ""
        errors.append(final.stderr.read() if final.stderr else "")
        balances, exchange_fills, sent = asyncio.run(exchange_view(port))
        store_fills, store_orders, store_position = asyncio.run(store_view(data))
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)

    assert not [e for e in errors if "Traceback" in e or "Error" in e], errors
    # The kills landed mid-life: later lives had orders to adopt or resolve.
    assert any(life["adopted"] or life["resolved"] or life["never_sent"] for life in lives[1:])
    ours = [c for c in sent if role_of(c) is not None]
    assert len(ours) > 10, "the bot should have traded in every life"
    assert len(set(ours)) == len(ours)  # no client order id reached the exchange twice
    assert set(ours) <= set(store_orders)  # every order was written before it was sent
    per_signal_entries: dict[str, int] = defaultdict(int)
    for coid in ours:
        if role_of(coid) is not None and coid[2] in "em":
            per_signal_entries[store_orders[coid]] += 1
    assert max(per_signal_entries.values()) == 1  # one exchange order per entry signal
    for coid, qty in exchange_fills.items():  # no fill lost
        assert store_fills.get(coid) == qty, coid
    assert store_position == balances.get("XXRP", Decimal(0)) + balances.get("XRP.F", Decimal(0))
