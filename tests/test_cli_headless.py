"""The real command, end to end: headless run, recording, and replay, against the simulator."""

from __future__ import annotations

import gzip
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gal_friday.kraken.book import OrderBook
from gal_friday.kraken.public import PublicStreamDecoder
from gal_friday.kraken.recorder import read_recording


def gal_friday(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAL_FRIDAY_", "KRAKEN_"))}
    env["KRAKEN_API_KEY"] = "TESTKEY-should-never-appear"
    env["KRAKEN_API_SECRET"] = "c2VjcmV0LXNob3VsZC1uZXZlci1hcHBlYXI="
    return subprocess.Popen(
        [sys.executable, "-m", "gal_friday", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def read_until(
    proc: subprocess.Popen[str], needle: str, within_s: float, times: int = 1
) -> list[str]:
    """Lines of stdout up to and including the first containing ``needle`` ``times`` times."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.count(needle) >= times:
                return lines
    pytest.fail(f"no {needle!r} in {within_s}s; last lines: {lines[-3:]}")


def test_headless_sim_run_predicts_logs_status_and_stops_cleanly_on_sigterm(in_tmp: Path) -> None:
    """The offline demo end to end: simulator, verified books, a demo model trained on first
    run, features and predictions for both pairs (at the next minute's close), status lines,
    clean SIGTERM, and no secret anywhere."""
    proc = gal_friday(
        "--no-ui", "--exchange", "sim", "--set", "monitoring.status_interval_s=0.5", cwd=in_tmp
    )
    try:
        lines = read_until(proc, "p_up=", within_s=90, times=2)
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = json_lines("".join(lines) + out)
    for rec in records:
        assert rec["ts"].endswith("Z") and "event" in rec  # type: ignore[union-attr]
    status = [str(r["event"]) for r in records if r.get("event_type") == "status"]
    last = status[-1]
    assert "conn=connected" in last and "checksum_fail=0" in last
    assert "XRP/USD -/-" not in last  # a real best bid/ask was shown
    assert any(line.count("p_up=") == 2 for line in status)  # predictions for both pairs
    assert (in_tmp / "models" / "sim-demo" / "model.json").is_file()
    assert records[-1]["event"] == "gal-friday stopped"
    log_file = (in_tmp / "logs" / "gal-friday.jsonl").read_text()
    for text in ("".join(lines), out, err, log_file):
        assert "TESTKEY-should-never-appear" not in text
        assert "c2VjcmV0LXNob3VsZC1uZXZlci1hcHBlYXI=" not in text


def test_sigint_also_stops_cleanly(in_tmp: Path) -> None:
    """SIGINT while the engine trades (its "trading" line is out) stops it cleanly."""
    proc = gal_friday("--no-ui", "--exchange", "sim", cwd=in_tmp)
    try:
        read_until(proc, '"event": "trading"', within_s=90)
    finally:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert json_lines(out)[-1]["event"] == "gal-friday stopped"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_record_then_replay_through_the_simulator(in_tmp: Path) -> None:
    """Record the simulator's public stream, replay the file through a second simulator, and
    record that: both files hold books whose every checksum verifies."""
    first = in_tmp / "first.jsonl.gz"
    rec = gal_friday(
        "--exchange", "sim", "record", "--out", str(first), "--duration", "4", cwd=in_tmp
    )
    _, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    header, frames = read_recording(first)
    assert header["pairs"] == ["XRP/USD", "DOGE/USD"]
    raws = [raw for _, raw in frames]
    assert verified_books(raws) > 20

    port = free_port()
    sim = gal_friday(
        "sim-exchange", "--port", str(port), "--replay", str(first), "--loop", cwd=in_tmp
    )
    try:
        wait_for_port(port)
        second = in_tmp / "second.jsonl.gz"
        rec2 = gal_friday(
            "record",
            "--out",
            str(second),
            "--duration",
            "3",
            "--set",
            f'kraken.ws_public_url="ws://127.0.0.1:{port}/v2"',
            "--set",
            f'kraken.rest_url="http://127.0.0.1:{port}"',
            cwd=in_tmp,
        )
        _, err2 = rec2.communicate(timeout=60)
        assert rec2.returncode == 0, err2
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=30)
    _, frames2 = read_recording(second)
    assert verified_books([raw for _, raw in frames2]) > 5


def verified_books(raws: list[str]) -> int:
    """Feed raw frames to a fresh decoder; count verified book messages, fail on any bad one."""
    decoder = PublicStreamDecoder(["XRP/USD", "DOGE/USD"], depth=10)
    for raw in raws:
        decoder.feed(raw)
    assert decoder.stats.checksum_failures == 0
    assert decoder.stats.malformed == 0
    assert all(isinstance(b, OrderBook) for b in decoder.books.values())
    return decoder.stats.book_messages


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"simulator did not listen on {port}")


def test_recording_is_gzip_json_lines_with_a_header(in_tmp: Path) -> None:
    out = in_tmp / "r.jsonl.gz"
    proc = gal_friday(
        "--exchange", "sim", "record", "--out", str(out), "--duration", "2", cwd=in_tmp
    )
    proc.communicate(timeout=60)
    with gzip.open(out, "rt") as fh:
        header = json.loads(fh.readline())
        frame = json.loads(fh.readline())
    assert header["format"] == "gal-friday-recording"
    assert set(frame) == {"t", "raw"} and isinstance(frame["t"], int)


def test_live_mode_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "gal_friday", "--no-ui", "--mode", "live"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "gal-friday: --mode live needs KRAKEN_API_KEY and KRAKEN_API_SECRET in the environment "
        "(a key with the trading and WebSocket permissions); refusing to start"
    )
    assert "Traceback" not in proc.stderr


def test_a_halt_survives_a_restart_until_the_operator_resumes(in_tmp: Path) -> None:
    """halt, SIGTERM, start again on the same data folder: still HALTED, with the operator's
    reason, and nothing enters until ``gal-friday resume``."""

    def start() -> subprocess.Popen[str]:  # until its status knows the trading state
        proc = gal_friday("--no-ui", "--exchange", "sim", cwd=in_tmp)
        read_until(proc, '"event": "trading"', within_s=90)
        deadline = time.monotonic() + 30
        while not json.loads(control("status", "--json"))["started"]:
            assert time.monotonic() < deadline, "the status never knew the trading state"
            time.sleep(0.1)
        return proc

    def control(*args: str) -> str:
        done = gal_friday(*args, cwd=in_tmp)
        out, err = done.communicate(timeout=30)
        assert done.returncode == 0, err
        return out

    def stop(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err

    proc = start()
    try:
        control("halt", "--reason", "maintenance window")
    finally:
        stop(proc)
    for _ in range(2):
        proc = start()
        try:
            status = json.loads(control("status", "--json"))
            assert status["halted"] and status["halt_reason"] == "maintenance window"
        finally:
            stop(proc)
    proc = start()
    try:
        control("resume", "--yes")
    finally:
        stop(proc)
    proc = start()
    try:
        assert not json.loads(control("status", "--json"))["halted"]
    finally:
        stop(proc)
