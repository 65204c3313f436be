"""History download (Trades pages -> 1-minute candles, resumable) and history-file import,
against the simulator's REST over loopback and a tiny scripted Kraken stub."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gal_friday.candles import read_candles
from gal_friday.download import (
    DownloadError,
    HistoryFileError,
    default_output,
    download_candles,
    import_history,
)
from gal_friday.kraken.history import retry_delay
from gal_friday.kraken.numbers import format_scaled
from gal_friday.kraken.rest import KrakenPublicRest, KrakenRateLimited, KrakenUnavailable
from gal_friday.sim.market import SyntheticMarket
from gal_friday.sim.server import SimExchange

PAIRS = ("XRP/USD", "DOGE/USD")
NS = 1_000_000_000
START_NS = 1_790_000_000_123_456_789  # the live market opens here; history is before it
NOW_S = START_NS / NS
HOUR_DAYS = 1 / 24
Row = tuple[int, str, str, str, str, str, int]


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimExchange, SyntheticMarket]]:
    market = SyntheticMarket(11, PAIRS, start_ns=START_NS, history_hours=3)
    async with SimExchange(market) as exchange:
        yield exchange, market


class ScriptedRest(KrakenPublicRest):
    """The real client, plus injected trouble: a crash or a hang at call ``n``, pages that
    repeat the tail of the previous page. ``calls`` records each ``since``."""

    def __init__(self, url: str, *, fail_at: int = 0, hang_at: int = 0, overlap: int = 0) -> None:
        super().__init__(url)
        self.fail_at, self.hang_at, self.overlap = fail_at, hang_at, overlap
        self.calls: list[int | None] = []
        self.hanging = asyncio.Event()
        self._prev: list[list[Any]] = []

    async def trades(
        self, pair: str, since: int | None = None, count: int = 1000
    ) -> tuple[list[list[Any]], int]:
        self.calls.append(since)
        if len(self.calls) == self.fail_at:
            raise RuntimeError("injected crash")
        if len(self.calls) == self.hang_at:
            self.hanging.set()
            await asyncio.Event().wait()
        rows, last = await super().trades(pair, since, count)
        if self.overlap and self._prev:
            rows = self._prev[-self.overlap :] + rows
        self._prev = rows
        return rows, last


def expected(market: SyntheticMarket, pair: str, start_s: int, end_s: int) -> list[Row]:
    """Minute candles straight from the simulator's tape (integers, nanoseconds), computed
    without the download module."""
    tape, inst = market.tapes[pair], market.instruments[pair]
    minutes: dict[int, list[int]] = {}
    for ts, px, qty in zip(tape.ts, tape.px, tape.qty, strict=True):
        if not start_s * NS <= ts < end_s * NS:
            continue
        minute = ts // (60 * NS) * 60
        c = minutes.get(minute)
        if c is None:
            minutes[minute] = [px, px, px, px, qty, 1]
        else:
            c[1], c[2], c[3] = max(c[1], px), min(c[2], px), px
            c[4] += qty
            c[5] += 1
    pp, qp = inst.price_precision, inst.qty_precision
    return [
        (
            m,
            format_scaled(o, pp),
            format_scaled(h, pp),
            format_scaled(lo, pp),
            format_scaled(c, pp),
            format_scaled(v, qp),
            n,
        )
        for m, (o, h, lo, c, v, n) in sorted(minutes.items())
    ]


def rows_of(path: Path) -> list[Row]:
    with path.open(newline="") as fh:
        return [(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in csv.reader(fh)]


def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def fetch(
    url: str,
    out: Path,
    days: float = 2 * HOUR_DAYS,
    pair: str = "XRP/USD",
    now_s: float = NOW_S,
    rest: KrakenPublicRest | None = None,
    **kw: Any,
) -> Any:
    client = rest if rest is not None else KrakenPublicRest(url)
    async with client:
        return await download_candles(
            client,
            pair,
            days,
            out,
            progress=False,
            now_s=now_s,
            **{"page_size": 97, "pause_s": 0, **kw},
        )


# --- candles from trades ------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS)
async def test_candles_equal_independent_aggregation_across_pages(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path, pair: str
) -> None:
    exchange, market = sim
    out = default_output(tmp_path, pair)
    result = await fetch(exchange.rest_url, out, pair=pair)
    assert out.name == ("XRPUSD_1.csv" if pair == "XRP/USD" else "XDGUSD_1.csv")
    want = expected(market, pair, result.start_s, result.end_s)
    got = rows_of(out)
    assert got == want
    assert result.requests > 20  # 97-print pages: many boundaries, most inside a minute
    assert result.candles == len(want) > 100
    assert result.trades == sum(r[6] for r in want)
    assert [r[0] for r in got] == sorted({r[0] for r in got})  # no duplicated minute
    assert result.end_s == int(NOW_S) // 60 * 60 and result.end_s - result.start_s == 7200
    assert len(read_candles(out)) == len(want)  # the shared reader takes the file
    assert not out.with_name(out.name + ".trades.part").exists()


async def test_overlapping_pages_are_deduplicated(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, market = sim
    rest = ScriptedRest(exchange.rest_url, overlap=7)  # each page repeats 7 earlier prints
    result = await fetch(exchange.rest_url, tmp_path / "XRPUSD_1.csv", rest=rest)
    assert rows_of(tmp_path / "XRPUSD_1.csv") == expected(
        market, "XRP/USD", result.start_s, result.end_s
    )


# --- resume -------------------------------------------------------------------------------------


async def test_crash_resumes_where_it_stopped(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, _ = sim
    clean = await fetch(exchange.rest_url, tmp_path / "a" / "XRPUSD_1.csv")
    out = tmp_path / "b" / "XRPUSD_1.csv"
    with pytest.raises(RuntimeError, match="injected crash"):
        await fetch(exchange.rest_url, out, rest=ScriptedRest(exchange.rest_url, fail_at=9))
    part = out.with_name(out.name + ".trades.part")
    state = json.loads(out.with_name(out.name + ".state.json").read_text())
    assert state["pair"] == "XRP/USD" and state["covered"] == []
    assert state["job"]["part_bytes"] == part.stat().st_size > 0 and not out.exists()
    assert state["job"]["start_s"] == clean.start_s and not state["job"]["fetched"]
    with part.open("ab") as fh:  # a page written just before a crash, never recorded
        fh.write(b"1790000000.5,9.99999,1.00000000,1\ngarbage")
    rest = ScriptedRest(exchange.rest_url)
    resumed = await fetch(exchange.rest_url, out, rest=rest)
    assert resumed.resumed
    assert resumed.requests == clean.requests - 8  # eight pages were already saved
    assert rest.calls[0] is not None and rest.calls[0] > clean.start_s * NS
    assert out.read_bytes() == (tmp_path / "a" / "XRPUSD_1.csv").read_bytes()
    assert not part.exists()


async def test_cancelled_download_resumes_and_is_not_repeated(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, _ = sim
    clean = await fetch(exchange.rest_url, tmp_path / "a" / "XRPUSD_1.csv")
    out = tmp_path / "b" / "XRPUSD_1.csv"
    rest = ScriptedRest(exchange.rest_url, hang_at=6)
    task = asyncio.create_task(fetch(exchange.rest_url, out, rest=rest))
    await asyncio.wait_for(rest.hanging.wait(), 5)
    task.cancel()  # what Ctrl-C does to the CLI's task
    with contextlib.suppress(asyncio.CancelledError):
        await task
    resumed = await fetch(exchange.rest_url, out)
    assert resumed.resumed and resumed.requests == clean.requests - 5
    assert out.read_bytes() == (tmp_path / "a" / "XRPUSD_1.csv").read_bytes()
    again = await fetch(exchange.rest_url, out)
    assert again.up_to_date and again.requests == 0 and not again.resumed
    assert out.read_bytes() == (tmp_path / "a" / "XRPUSD_1.csv").read_bytes()


async def test_extending_fetches_only_what_is_new(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, market = sim
    out = tmp_path / "XRPUSD_1.csv"
    first = await fetch(exchange.rest_url, out, days=HOUR_DAYS, now_s=NOW_S - 2400)
    rest = ScriptedRest(exchange.rest_url)  # forty minutes later, same start
    later = await fetch(exchange.rest_url, out, days=HOUR_DAYS + 2400 / 86400, rest=rest)
    assert later.start_s == first.start_s and not later.up_to_date
    assert rest.calls[0] == (first.end_s - 1) * NS  # starts where the file ended
    rest = ScriptedRest(exchange.rest_url)  # and further back: only the older part
    wider = await fetch(exchange.rest_url, out, days=2.5 * HOUR_DAYS, rest=rest)
    assert rest.calls[0] == (wider.start_s - 1) * NS
    assert all(c is not None and c < later.start_s * NS for c in rest.calls)
    assert rows_of(out) == expected(market, "XRP/USD", wider.start_s, wider.end_s)
    fresh = await fetch(
        exchange.rest_url, tmp_path / "fresh" / "XRPUSD_1.csv", days=2.5 * HOUR_DAYS
    )
    assert out.read_bytes() == fresh.out.read_bytes()


# --- Kraken's refusals --------------------------------------------------------------------------

END_S = 1_700_000_160
STUB_TRADES = [  # price, volume, time, id: two minutes and one print past the window
    ("0.50000", "10.00000000", 1700000041.5, 1),
    ("0.60000", "5.00000000", 1700000042.25, 2),
    ("0.55000", "1.00000000", 1700000100.0, 3),
    ("0.70000", "1.00000000", 1700000170.0, 4),
]


class KrakenStub:
    """A Kraken Trades endpoint over HTTP that first answers with the scripted failures
    (a Kraken error list, or an HTTP status), then serves ``STUB_TRADES``."""

    def __init__(self, script: list[list[str] | int]) -> None:
        self.script = list(script)
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, int):
                return web.Response(status=step, text="down")
            return web.json_response({"error": step})
        if request.query.get("pair") != "XRPUSD":
            return web.json_response({"error": ["EQuery:Unknown asset pair"]})
        since = int(request.query["since"])
        rows: list[list[Any]] = [
            [p, v, t, "b", "l", "", i] for p, v, t, i in STUB_TRADES if t * NS > since
        ]
        last = str(int(rows[-1][2] * NS)) if rows else str(since)
        return web.json_response({"error": [], "result": {"XXRPZUSD": rows, "last": last}})

    async def __aenter__(self) -> KrakenStub:
        app = web.Application()
        app.router.add_get("/0/public/Trades", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_rate_limits_and_outages_are_retried(tmp_path: Path) -> None:
    script: list[list[str] | int] = [
        ["EGeneral:Too many requests"],
        503,
        429,
        ["EAPI:Rate limit exceeded"],
    ]
    async with KrakenStub(script) as stub:
        result = await fetch(
            stub.url, tmp_path / "XRPUSD_1.csv", days=3 / 1440, now_s=END_S, backoff_s=0.01
        )
    assert stub.requests == 5 and result.requests == 5
    assert rows_of(tmp_path / "XRPUSD_1.csv") == [
        (1700000040, "0.50000", "0.60000", "0.50000", "0.60000", "15.00000000", 2),
        (1700000100, "0.55000", "0.55000", "0.55000", "0.55000", "1.00000000", 1),
    ]


def test_throttled_waits_until_the_time_kraken_names() -> None:
    error = KrakenRateLimited([f"EService:Throttled: {int(time.time()) + 30}"], "Trades")
    assert 28 < retry_delay(error, 0, 0.5) <= 30
    assert retry_delay(KrakenRateLimited(["EAPI:Rate limit exceeded"], "Trades"), 3, 0.5) == 4.0
    assert retry_delay(KrakenUnavailable(["HTTP 503"], "Trades"), 20, 2.0) == 60.0


async def test_persistent_rate_limit_fails_with_one_line(tmp_path: Path) -> None:
    async with KrakenStub([["EGeneral:Too many requests"]] * 10) as stub:
        with pytest.raises(DownloadError) as info:
            await fetch(
                stub.url,
                tmp_path / "XRPUSD_1.csv",
                days=3 / 1440,
                now_s=END_S,
                backoff_s=0.001,
                max_retries=2,
            )
    assert stub.requests == 3
    message = str(info.value)
    assert "rate-limiting" in message and "run the same download again" in message
    assert "\n" not in message
    assert files_in(tmp_path) == []  # nothing fetched, nothing left behind


async def test_pause_between_calls(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, _ = sim
    began = time.monotonic()
    result = await fetch(
        exchange.rest_url,
        tmp_path / "XRPUSD_1.csv",
        days=0.25 * HOUR_DAYS,
        pause_s=0.05,
        page_size=150,
    )
    assert result.requests >= 3
    assert time.monotonic() - began >= 0.05 * (result.requests - 1)


async def test_unknown_pair_is_a_clear_error(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, _ = sim
    out = default_output(tmp_path, "FOO/USD")
    with pytest.raises(DownloadError) as info:
        await fetch(exchange.rest_url, out, pair="FOO/USD")
    message = str(info.value)
    assert "FOO/USD" in message and "does not know" in message and "\n" not in message
    assert files_in(tmp_path) == []


async def test_a_file_of_another_pair_is_refused(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, _ = sim
    out = tmp_path / "candles.csv"
    await fetch(exchange.rest_url, out, days=0.25 * HOUR_DAYS)
    with pytest.raises(DownloadError, match="holds XRP/USD"):
        await fetch(exchange.rest_url, out, days=0.25 * HOUR_DAYS, pair="DOGE/USD")
    with pytest.raises(DownloadError, match="positive"):
        await fetch(exchange.rest_url, out, days=0)


# --- import -------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


OHLCVT = (
    "1700000040,0.5500,0.5520,0.5490,0.5510,1234.5,12\n"
    "1700000100,0.5510,0.5510,0.5500,0.5500,1E-5,1\n"
    "\n"
    "1700000220,0.5500,0.5600,0.5400,0.5450,10,3\n"
)


def test_import_ohlcvt_is_validated_and_normalised(tmp_path: Path) -> None:
    src = write(tmp_path / "dl" / "XRPUSD_1.csv", OHLCVT)
    result = import_history(src, "XRP/USD", tmp_path / "data")
    assert result.out == tmp_path / "data" / "XRPUSD_1.csv"
    assert (result.kind, result.interval_min, result.rows_in, result.candles) == ("ohlcvt", 1, 3, 3)
    assert rows_of(result.out) == [
        (1700000040, "0.5500", "0.5520", "0.5490", "0.5510", "1234.5", 12),
        (1700000100, "0.5510", "0.5510", "0.5500", "0.5500", "0.00001", 1),
        (1700000220, "0.5500", "0.5600", "0.5400", "0.5450", "10", 3),
    ]
    assert len(read_candles(result.out)) == 3


def test_import_ohlcvt_interval_from_name_or_rows(tmp_path: Path) -> None:
    hourly = (
        "1699999200,1,2,0.5,1.5,10,3\n1700002800,1.5,1.5,1.5,1.5,1,1\n"
        "1700006400,1.5,1.6,1.5,1.6,2,2\n"
    )
    named = import_history(write(tmp_path / "XRPUSD_60.csv", hourly), "XRP/USD", tmp_path / "data")
    assert named.interval_min == 60 and named.out.name == "XRPUSD_60.csv"
    guessed = import_history(write(tmp_path / "history.csv", hourly), "DOGE/USD", tmp_path / "data")
    assert guessed.interval_min == 60 and guessed.out.name == "XDGUSD_60.csv"
    with pytest.raises(DownloadError, match="XBTUSD"):
        import_history(write(tmp_path / "XBTUSD_60.csv", hourly), "XRP/USD", tmp_path / "data")
    with pytest.raises(HistoryFileError, match=r"line 1: .*not on a 60-minute boundary"):
        import_history(
            write(tmp_path / "XRPUSD_60.csv", "1700000040,1,1,1,1,1,1\n"),
            "XRP/USD",
            tmp_path / "data",
        )


TRADES = (
    "1700000040,0.5000,100\n"
    "1700000055,0.5100,50.5\n"
    "1700000055,0.4900,0.25\n"
    "1700000099,0.5050,10\n"
    "1700000100,0.5060,1\n"
    "1700000230,0.5000,2.5\n"
)


def test_import_trades_builds_minute_candles(tmp_path: Path) -> None:
    result = import_history(
        write(tmp_path / "XRPUSD.csv", TRADES), "XRP/USD", tmp_path / "data", kind="trades"
    )
    assert (result.kind, result.interval_min, result.rows_in) == ("trades", 1, 6)
    assert (result.first_s, result.last_s) == (1700000040, 1700000220)
    assert rows_of(result.out) == [
        (1700000040, "0.5000", "0.5100", "0.4900", "0.5050", "160.75", 4),
        (1700000100, "0.5060", "0.5060", "0.5060", "0.5060", "1", 1),
        (1700000220, "0.5000", "0.5000", "0.5000", "0.5000", "2.5", 1),
    ]


@pytest.mark.parametrize(
    ("name", "text", "kind", "line", "what"),
    [
        (
            "t.csv",
            "1700000040,0.5,1\n1700000041,0.5,1\n1700000042,abc,1\n",
            "trades",
            3,
            "price 'abc'",
        ),
        ("t.csv", "1700000040,0.5,1\n1700000030,0.5,1\n", "trades", 2, "earlier"),
        ("t.csv", "1700000040,0.5,1\n1700000041,0.5\n", "auto", 2, "expected 3 columns"),
        (
            "XRPUSD_1.csv",
            OHLCVT.replace("0.5510,0.5510", "0.5510,-0.5510"),
            "auto",
            2,
            "high '-0.5510'",
        ),
        ("XRPUSD_1.csv", OHLCVT.replace(",3\n", ",3.5\n"), "ohlcvt", 4, "count '3.5'"),
        ("XRPUSD_1.csv", OHLCVT.replace(",12\n", ",-12\n"), "ohlcvt", 1, "count '-12'"),
        ("XRPUSD_1.csv", OHLCVT + "1700000160,1,1,1,1,1,1\n", "ohlcvt", 5, "not after"),
        ("XRPUSD_1.csv", "time,open,high,low,close,volume,count\n", "auto", 1, "time 'time'"),
        ("XRPUSD_1.csv", "1700000040,1,2,1.5,1.9,1,1\n", "auto", 1, "do not enclose"),
        ("odd.csv", "1,2,3,4\n", "auto", 1, "4 columns"),
    ],
)
def test_malformed_files_name_the_line(
    tmp_path: Path, name: str, text: str, kind: Any, line: int, what: str
) -> None:
    src = write(tmp_path / name, text)
    with pytest.raises(HistoryFileError) as info:
        import_history(src, "XRP/USD", tmp_path / "data", kind=kind)
    message = str(info.value)
    assert f"line {line}:" in message and what in message and "\n" not in message
    assert not (tmp_path / "data").exists()  # checked in full before writing anything


async def test_trades_import_matches_download_and_download_extends_it(
    sim: tuple[SimExchange, SyntheticMarket], tmp_path: Path
) -> None:
    exchange, market = sim
    downloaded = await fetch(exchange.rest_url, tmp_path / "rest" / "XRPUSD_1.csv")
    tape = market.tapes["XRP/USD"]
    mid_ns = (downloaded.start_s + 3600) * NS
    with write(tmp_path / "XRPUSD.csv", "").open("w") as fh:  # the first hour, as Kraken's
        for ts, px, qty in zip(tape.ts, tape.px, tape.qty, strict=True):  # REST times it
            if downloaded.start_s * NS <= ts < mid_ns:
                fh.write(f"{round(ts / NS, 7)},{format_scaled(px, 5)},{format_scaled(qty, 8)}\n")
    imported = import_history(tmp_path / "XRPUSD.csv", "XRP/USD", tmp_path / "data")
    assert imported.kind == "trades"
    head = [r for r in rows_of(downloaded.out) if r[0] < mid_ns // NS]
    assert rows_of(imported.out) == head
    rest = ScriptedRest(exchange.rest_url)
    extended = await fetch(exchange.rest_url, imported.out, rest=rest)
    assert rest.calls[0] == (imported.last_s + 59) * NS  # only after the import
    assert extended.out.read_bytes() == downloaded.out.read_bytes()
    assert Decimal(rows_of(extended.out)[0][5]) > 0
