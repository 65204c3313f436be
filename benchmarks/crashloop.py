"""The crash loop: the real bot (``gal-friday --no-ui --mode live``) trading against
``gal-friday sim-exchange`` in another process, killed with SIGKILL again and again, restarted
each time, and its store compared with the simulator's account after every recovery.

    .venv/bin/python benchmarks/crashloop.py --kills 50

Prints one JSON line: ``kills`` and the seven counts that must all be 0 --

* ``lost_fills``: our orders whose filled quantity at the exchange exceeds the store's fills;
* ``duplicated_fills``: orders whose store fills exceed the exchange's;
* ``unknown_orders``: orders at the exchange the store has never heard of;
* ``unprotected``: open trades without their own stop-loss and take-profit working at the
  exchange for their open quantity, or a pair held at the exchange beyond what those cover;
* ``position_mismatches``: pairs whose store position differs from the exchange's balance;
* ``pnl_mismatches``: closed trades whose realised P&L differs from the P&L of the
  exchange's fills of that trade's orders (or trades the store lacks).

-- each counted once per distinct order, trade or pair, over every comparison, plus what the
run did (orders, fills, round trips, how the kills landed). The kill moments, planned from
``--seed``: half within 0.5 s of an order request (the bot's "order request" log line), a fifth
at the first sight of an entry fill at the exchange (polled every 5 ms: before its protection
when the bot has not sent it yet), a fifth during the recovery of a restart, the rest at a
random moment. A kill during recovery always follows another kill (the restart it
interrupts is that kill's). After each recovery a comparison waits up to ``--settle`` seconds
for the store to catch up (the audit writer batches), then counts what is still wrong; the
last comparison follows a clean SIGTERM.

Settings that trade often: a demo model trained on the simulator's own history with a label
(a 0.001 % rise within a minute) it nearly always predicts, a buy threshold just above 0.5, a
2 s limit entry then market, a 9 s maximum holding time, stops and targets close to the price,
and risk limits wide enough never to HALT. The bot decides once per closed 1-minute candle per
pair (both pairs), so a kill that waits for an order request waits up to a minute: 50 kills
take about half an hour.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

PAIRS = ("XRP/USD", "DOGE/USD")
BASES = {"XRP/USD": "XRP", "DOGE/USD": "DOGE"}
KEY = "crashloop-key"
SECRET = base64.b64encode(bytes(range(64, 128))).decode()
STORE_FILE = "data/gal-friday-kraken-live.sqlite3"
COUNTS = (
    "lost_fills",
    "duplicated_fills",
    "unknown_orders",
    "unprotected",
    "position_mismatches",
    "pnl_mismatches",
)
ZERO = Decimal(0)


def config_text(port: int) -> str:
    """The bot's config.toml: live against the simulator at ``port``, trading often."""
    url = f"127.0.0.1:{port}"
    return f"""
exchange = "kraken"
mode = "live"
pairs = {json.dumps(list(PAIRS))}

[kraken]
ws_public_url = "ws://{url}/v2"
ws_private_url = "ws://{url}/auth/v2"
rest_url = "http://{url}"
reconnect_initial_s = 0.1
reconnect_max_s = 1.0

[prediction]
models = ["models/sim-demo"]

[training]
threshold_pct = 0.001
horizon_min = 1

[strategy]
buy_threshold = 0.5001
sell_threshold = 0.4999
confirm_momentum = false
stop_loss_pct = 0.1
take_profit_pct = 0.7
min_edge_pct = 0
max_holding_min = 0.15

[risk]
max_total_drawdown_pct = 90
max_daily_drawdown_pct = 90
max_weekly_drawdown_pct = 90
max_consecutive_losses = 100000

[execution]
entry_timeout_s = 2
entry_timeout_action = "market"
shutdown_wait_s = 5

[monitoring]
status_interval_s = 5
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """The bot and simulator run this checkout's code, whatever is installed."""
    return {
        **os.environ,
        "KRAKEN_API_KEY": KEY,
        "KRAKEN_API_SECRET": SECRET,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


def gal_friday(*args: str) -> list[str]:
    return [sys.executable, "-m", "gal_friday", *args]


# --- the bot, as a process whose log lines we read ---------------------------------------------


class Bot:
    """One life of the bot: its JSON log lines (stdout) read on a thread, with the time each
    arrived, so the loop can wait for a line and kill right after it."""

    def __init__(self, cwd: Path, stderr_file: Path) -> None:
        self.log = cwd / "bot.jsonl"  # every life's lines, one after the other
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        with stderr_file.open("a") as err:
            self.proc = subprocess.Popen(
                gal_friday("--no-ui", "--config", "config.toml"),
                cwd=cwd,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                self._take(raw)
        with self._cond:
            self._cond.notify_all()

    def _take(self, raw: str) -> None:
        try:
            line = json.loads(raw)
        except ValueError:
            return
        with self._cond:
            self.lines.append((time.monotonic(), line if isinstance(line, dict) else {}))
            self._cond.notify_all()

    def wait_line(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, since: int = 0
    ) -> int | None:
        """Index of the first line from ``since`` on that ``match``es, or None (timeout, or
        the process ended)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.lines)):
                    if match(self.lines[i][1]):
                        return i
                since = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.5))

    def saw(self, event: str) -> bool:
        with self._cond:
            return any(line.get("event") == event for _, line in self.lines)

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


def event_is(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == name


def recovered(line: dict[str, Any]) -> bool:
    return str(line.get("event", "")).startswith(("recovery complete", "recovery failed"))


# --- the two views: the exchange's account and the bot's store --------------------------------


def exchange_account(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/account", timeout=5) as r:
        account: dict[str, Any] = json.load(r)
    return account


STORE_TABLES = ("orders", "fills", "trades", "positions")  # what the comparison reads


def store_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The store's orders, fills, trades and positions (read-only: the bot may be writing;
    WAL lets a reader see the last committed state)."""
    if not path.exists():
        return {table: [] for table in STORE_TABLES}
    out: dict[str, list[dict[str, Any]]] = {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        for table in STORE_TABLES:
            cursor = db.execute(f"SELECT * FROM {table}")
            names = [column[0] for column in cursor.description]
            out[table] = [dict(zip(names, row, strict=True)) for row in cursor]
    finally:
        db.close()
    return out


def dec(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(str(value))


@dataclass
class Findings:
    """What one comparison found wrong, each as a set of keys (order id, trade id, pair)."""

    sets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in COUNTS})

    def add(self, name: str, key: str) -> None:
        self.sets[name].add(key)

    @property
    def clean(self) -> bool:
        return not any(self.sets.values())


def compare(account: dict[str, Any], store: dict[str, list[dict[str, Any]]]) -> Findings:
    """Every invariant of the module doc, between one exchange snapshot and one store read."""
    found = Findings()
    stored = {o["client_order_id"]: o for o in store["orders"]}
    exchange_filled: dict[str, Decimal] = defaultdict(Decimal)
    for f in account["fills"]:
        exchange_filled[f["cl_ord_id"] or f["order_id"]] += dec(f["qty"])
    store_filled: dict[str, Decimal] = defaultdict(Decimal)
    for f in store["fills"]:
        store_filled[f["client_order_id"]] += dec(f["qty"])
    for order in account["orders"]:
        coid = order["cl_ord_id"]
        if not coid or coid not in stored:
            found.add("unknown_orders", coid or order["order_id"])
            continue
        if store_filled[coid] < exchange_filled[coid]:
            found.add("lost_fills", coid)
        elif store_filled[coid] > exchange_filled[coid]:
            found.add("duplicated_fills", coid)
    _protection(account, store, stored, found)
    _positions(account, store, found)
    _pnl(account, store, stored, found)
    return found


def _protection(
    account: dict[str, Any],
    store: dict[str, list[dict[str, Any]]],
    stored: dict[str, dict[str, Any]],
    found: Findings,
) -> None:
    working: dict[tuple[str, str], Decimal] = defaultdict(Decimal)  # (trade, kind) -> qty
    covered: dict[str, Decimal] = defaultdict(Decimal)  # pair -> stop-loss qty working
    for order in account["orders"]:
        if order["status"] not in ("pending", "open") or order["side"] != "sell":
            continue
        mine = stored.get(order["cl_ord_id"] or "")
        left = dec(order["qty"]) - dec(order["vol_exec"])
        if mine is not None and order["order_type"] in ("stop-loss", "take-profit"):
            working[(mine["trade_id"], order["order_type"])] += left
            if order["order_type"] == "stop-loss":
                covered[mine["pair"]] += left
    for trade in store["trades"]:
        open_qty = dec(trade["open_qty"])
        if trade["status"] == "closed" or open_qty <= 0:
            continue
        for kind in ("stop-loss", "take-profit"):
            if working[(trade["trade_id"], kind)] != open_qty:
                found.add("unprotected", f"{trade['trade_id']} {kind}")
    for pair, base in BASES.items():
        if dec(account["balances"].get(base)) > covered[pair]:
            found.add("unprotected", pair)


def _positions(
    account: dict[str, Any], store: dict[str, list[dict[str, Any]]], found: Findings
) -> None:
    positions = {p["pair"]: dec(p["qty"]) for p in store["positions"]}
    for pair, base in BASES.items():
        if positions.get(pair, ZERO) != dec(account["balances"].get(base)):
            found.add("position_mismatches", pair)


def _pnl(
    account: dict[str, Any],
    store: dict[str, list[dict[str, Any]]],
    stored: dict[str, dict[str, Any]],
    found: Findings,
) -> None:
    """A closed trade's P&L is what its orders' fills at the exchange made, fees included."""
    made: dict[str, Decimal] = defaultdict(Decimal)
    for f in account["fills"]:
        mine = stored.get(f["cl_ord_id"] or "")
        if mine is None or not mine["trade_id"]:
            continue
        cost = dec(f["cost"])
        made[mine["trade_id"]] += (cost if f["side"] == "sell" else -cost) - dec(f["fee"])
    trades = {t["trade_id"]: t for t in store["trades"]}
    for trade_id in made:
        if trade_id not in trades:
            found.add("pnl_mismatches", trade_id)
    for trade_id, trade in trades.items():
        if trade["status"] == "closed" and abs(dec(trade["pnl"]) - made[trade_id]) > Decimal(
            "1e-8"
        ):
            found.add("pnl_mismatches", trade_id)


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One crash loop's folder, simulator and tallies."""

    root: Path
    port: int
    settle_s: float
    verbose: bool
    found: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in COUNTS})
    landed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    comparisons: int = 0
    recoveries_failed: int = 0

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE

    def start_bot(self) -> Bot:
        return Bot(self.root, self.root / "bot.stderr")

    def note(self, what: str) -> None:
        if self.verbose:
            print(f"crashloop: {what}", file=sys.stderr, flush=True)

    def check(self) -> Findings:
        """Compare until clean or ``settle_s`` passed; the findings of the last try count."""
        deadline = time.monotonic() + self.settle_s
        while True:
            found = compare(exchange_account(self.port), store_rows(self.store))
            if found.clean or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.comparisons += 1
        for name, keys in found.sets.items():
            self.found[name] |= keys
            if keys:
                self.note(f"{name}: {sorted(keys)}")
        return found

    def recover(self) -> Bot:
        """A new life, waited for until its recovery is done (restarted if it died)."""
        for _ in range(3):
            bot = self.start_bot()
            at = bot.wait_line(recovered, timeout=90)
            if at is not None and bot.wait_line(event_is("trading"), timeout=30, since=at):
                if str(bot.lines[at][1].get("event", "")).startswith("recovery failed"):
                    self.recoveries_failed += 1
                return bot
            self.note("a life did not reach trading; killed and started again")
            bot.kill()
        raise RuntimeError("the bot did not recover three times in a row; see bot.stderr")


def plan(kills: int, rng: random.Random) -> list[str]:
    """Half near an order request, a fifth between a fill and its protection, a fifth during
    recovery, the rest at random moments: shuffled, each recovery kill right after another
    kill (it interrupts that kill's restart)."""
    recovery = kills // 5
    others = ["order"] * (kills // 2) + ["protection"] * (kills // 5)
    others += ["random"] * (kills - recovery - len(others))
    rng.shuffle(others)
    for at in sorted(rng.sample(range(len(others)), recovery), reverse=True):
        others.insert(at + 1, "recovery")
    return others


def kill_near_an_order(run: Run, bot: Bot, rng: random.Random) -> None:
    since = len(bot.lines)
    if bot.wait_line(event_is("order request"), timeout=150, since=since) is None:
        run.landed["order_waited_in_vain"] += 1
    time.sleep(rng.uniform(0, 0.5))
    bot.kill()


def kill_after_a_fill(run: Run, bot: Bot) -> None:
    """Kill at the first sight of a new entry fill; note whether its protection was out."""
    seen = {f["trade_id"] for f in exchange_account(run.port)["fills"]}
    deadline = time.monotonic() + 150
    fill: dict[str, Any] | None = None
    while fill is None and time.monotonic() < deadline:
        account = exchange_account(run.port)
        fresh = [f for f in account["fills"] if f["trade_id"] not in seen and f["side"] == "buy"]
        seen |= {f["trade_id"] for f in account["fills"]}
        fill = fresh[0] if fresh else None
        if fill is None:
            time.sleep(0.005)
    bot.kill()
    if fill is None:
        run.landed["fill_waited_in_vain"] += 1
        return
    after = [
        o
        for o in exchange_account(run.port)["orders"]
        if o["order_type"] == "stop-loss" and o["opened_ns"] >= fill["ts_ns"]
    ]
    run.landed["before_protection" if not after else "after_protection"] += 1


def kill_during_recovery(run: Run, rng: random.Random) -> None:
    """Start a life and kill it within 1.5 s of its start line: mostly while it recovers."""
    young = run.start_bot()
    young.wait_line(event_is("gal-friday started"), timeout=60)
    time.sleep(rng.uniform(0, 1.5))
    done = young.saw("recovery complete") or young.saw("trading")
    young.kill()
    run.landed["after_recovery" if done else "during_recovery"] += 1


def crash_loop(kills: int, seed: int, settle_s: float, root: Path, verbose: bool) -> dict[str, Any]:
    began = time.monotonic()
    rng = random.Random(seed)
    port = free_port()
    run = Run(root, port, settle_s, verbose)
    (root / "config.toml").write_text(config_text(port))
    (root / "data").mkdir(exist_ok=True)
    with simulator(root, port, seed):
        train_demo_model(root)
        bot: Bot | None = run.recover()
        run.check()
        for n, kind in enumerate(plan(kills, rng), 1):
            run.note(f"kill {n}/{kills}: {kind}")
            if kind == "recovery":
                kill_during_recovery(run, rng)
                continue
            if bot is None:  # after a kill: a restart that recovers, then the comparison
                bot = run.recover()
                run.check()
            time.sleep(rng.uniform(0, 3))
            if kind == "order":
                kill_near_an_order(run, bot, rng)
            elif kind == "protection":
                kill_after_a_fill(run, bot)
            else:
                time.sleep(rng.uniform(0, 20))
                bot.kill()
            bot = None
        bot = run.recover()
        run.check()
        code = bot.stop()
        if code != 0:
            run.note(f"the last life exited with {code}")
        run.check()
        account = exchange_account(port)
    stored = store_rows(run.store)
    return {
        "kills": kills,
        **{name: len(keys) for name, keys in run.found.items()},
        "landed": dict(sorted(run.landed.items())),
        "recoveries_failed": run.recoveries_failed,
        "comparisons": run.comparisons,
        "exchange_orders": len(account["orders"]),
        "exchange_fills": len(account["fills"]),
        "round_trips": sum(1 for t in stored["trades"] if t["status"] == "closed"),
        "last_exit_code": code,
        "seconds": round(time.monotonic() - began, 1),
    }


@contextmanager
def simulator(root: Path, port: int, seed: int) -> Iterator[None]:
    with (root / "sim.stderr").open("w") as err:
        proc = subprocess.Popen(
            gal_friday(
                "sim-exchange", "--port", str(port), "--seed", str(seed), "--log-level", "WARNING"
            ),
            cwd=root,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                exchange_account(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the simulator did not start; see sim.stderr") from None
                time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def train_demo_model(root: Path) -> None:
    """The demo model the simulator run trains for itself, with this run's label (the bot
    against ``--exchange kraken`` never trains one on its own)."""
    code = (
        "import asyncio, pathlib\n"
        "from gal_friday.config import load_settings\n"
        "from gal_friday.prediction.pipeline import ensure_demo_model\n"
        "s = load_settings(pathlib.Path('config.toml'))\n"
        "asyncio.run(ensure_demo_model(s, s.kraken.rest_url))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=child_env(), check=True, capture_output=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--dir", type=Path, help="keep the run's folder here (default: a temp one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="narrate on stderr")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=False)
        result = crash_loop(args.kills, args.seed, args.settle, args.dir.resolve(), args.verbose)
    else:
        with tempfile.TemporaryDirectory(prefix="crashloop-") as tmp:
            result = crash_loop(args.kills, args.seed, args.settle, Path(tmp), args.verbose)
    print(json.dumps(result), flush=True)
    return 0 if all(result[name] == 0 for name in COUNTS) else 1


if __name__ == "__main__":
    sys.exit(main())
