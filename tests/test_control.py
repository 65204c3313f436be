"""The control socket: server and client in one process, and the CLI's error path."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal
from pathlib import Path

import cockpit_script as script
import pytest

from gal_friday.bus import EventBus
from gal_friday.config import Settings
from gal_friday.control import (
    ControlError,
    ControlServer,
    describe_status,
    flatten_summary,
    request,
    run_command,
    socket_path,
)
from gal_friday.events import (
    Event,
    FlattenEvent,
    HaltEvent,
    PortfolioEvent,
    ResumeEvent,
    TradingStartedEvent,
)
from gal_friday.risk import RiskManager


def settings_in(tmp_path: Path) -> Settings:
    return Settings(exchange="sim", paths={"data_dir": str(tmp_path / "d")})  # type: ignore[arg-type]


async def started(tmp_path: Path) -> tuple[EventBus, ControlServer, list[Event]]:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe((HaltEvent, ResumeEvent, FlattenEvent), seen.append, name="sink")
    settings = settings_in(tmp_path)
    # the trading state's owner, as in a run: the replies show the state it announces
    RiskManager(
        settings.risk, bus, script.portfolio, taker_fee_pct=settings.fees.taker_pct
    ).attach()
    server = ControlServer(bus, settings)
    await server.start()
    bus.start()
    return bus, server, seen


async def test_commands_publish_bus_events_and_status_reflects_them(tmp_path: Path) -> None:
    bus, server, seen = await started(tmp_path)
    try:
        before = (await request(server.path, "status"))["status"]
        assert "state: starting" in describe_status(before)
        await bus.publish(TradingStartedEvent("paper", Decimal(10_000), 1))
        await bus.publish(PortfolioEvent(script.portfolio()))
        await bus.drain()
        path = server.path
        halted = await request(path, "halt", {"reason": "maintenance", "operator": "ann"})
        assert halted["status"]["halted"] and halted["status"]["halt_reason"] == "maintenance"
        await request(path, "flatten", {"operator": "ann"})
        resumed = await request(path, "resume", {"operator": "ann"})
        assert resumed["status"]["halted"] is False
        status = (await request(path, "status"))["status"]
        await bus.drain()
    finally:
        await server.stop()
        await bus.stop()
    assert [type(e) for e in seen] == [HaltEvent, FlattenEvent, ResumeEvent]
    assert seen[0] == HaltEvent("maintenance", "operator", seen[0].ts_ns)
    assert seen[1].operator == "ann"  # type: ignore[attr-defined]
    assert status["mode"] == "SIM" and len(status["positions"]) == 2
    assert "Close 2 positions at market" in flatten_summary(status)
    assert "trading (not halted)" in describe_status(status)
    assert not path.exists()  # removed on stop


async def test_bad_requests_get_an_error_line_not_a_dropped_connection(tmp_path: Path) -> None:
    bus, server, _ = await started(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        replies = []
        for line in (b"not json\n", b'{"cmd": "hlat"}\n', b"[1]\n", b'{"cmd": "status"}\n'):
            writer.write(line)
            await writer.drain()
            replies.append(json.loads(await reader.readline()))
        writer.close()
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            await request(server.path, "nope")
    finally:
        await server.stop()
        await bus.stop()
    assert [r["ok"] for r in replies] == [False, False, False, True]
    assert "unknown command 'hlat'" in replies[1]["error"]


async def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = socket_path(settings_in(tmp_path))
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed run
    bus, server, _ = await started(tmp_path)
    try:
        with pytest.raises(ControlError, match="already running"):
            await ControlServer(EventBus(), settings_in(tmp_path)).start()
    finally:
        await server.stop()
        await bus.stop()


async def test_client_without_a_running_instance_says_so(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no running gal-friday"):
        await request(socket_path(settings_in(tmp_path)), "status")


def test_cli_command_without_instance_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_command(settings_in(tmp_path), "halt") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gal-friday: no running gal-friday found")


def test_cli_subcommands_parse_and_report_no_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gal_friday.cli import main

    data = f'paths.data_dir="{tmp_path}/d"'
    for argv in (
        ["status", "--json"],
        ["halt", "--reason", "x"],
        ["resume", "--yes"],
        ["flatten", "--yes"],
    ):
        assert main([*argv, "--set", data]) == 1
    assert capsys.readouterr().err.count("no running gal-friday found") == 4


async def test_flatten_asks_first_and_cancel_sends_nothing(tmp_path: Path) -> None:
    bus, server, seen = await started(tmp_path)
    questions: list[str] = []

    def no(question: str) -> bool:
        questions.append(question)
        return False

    try:
        code = await asyncio.to_thread(run_command, settings_in(tmp_path), "flatten", ask=no)
        await bus.drain()
    finally:
        await server.stop()
        await bus.stop()
    assert code == 0 and seen == []
    assert questions and questions[0].startswith("Close 0 positions at market")
