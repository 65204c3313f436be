"""Structured logs: one JSON object per line, UTC milliseconds, secrets never written."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gal_friday.config import LoggingSettings
from gal_friday.logs import setup_logging

KEY = "AKEY-0123456789abcdef"
SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[io.StringIO, Path]]:
    stream = io.StringIO()
    path = tmp_path / "logs" / "bot.jsonl"
    setup_logging(LoggingSettings(file=str(path)), secrets=[KEY, SECRET], stream=stream)
    yield stream, path
    logging.getLogger().handlers.clear()


def test_every_line_is_json_with_utc_millisecond_timestamp(
    logged: tuple[io.StringIO, Path],
) -> None:
    stream, path = logged
    logging.getLogger("gal_friday.test").info("book ready", extra={"pair": "XRP/USD", "levels": 10})
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert record["event"] == "book ready"
    assert (record["level"], record["logger"]) == ("info", "gal_friday.test")
    assert (record["pair"], record["levels"]) == ("XRP/USD", 10)
    assert json.loads(path.read_text().splitlines()[-1]) == record


def test_secrets_are_redacted_wherever_they_appear(logged: tuple[io.StringIO, Path]) -> None:
    stream, path = logged
    log = logging.getLogger("gal_friday.test")
    log.info("signing with %s", SECRET)
    log.warning("request failed", extra={"headers": {"API-Key": KEY}, "api_secret": "x"})
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        log.exception("boom")
    for text in (stream.getvalue(), path.read_text()):
        assert KEY not in text and SECRET not in text
        assert "***" in text


def _record(created: float, msg: str = "tick") -> logging.LogRecord:
    record = logging.LogRecord("gal_friday.test", logging.INFO, __file__, 1, msg, (), None)
    record.created = created
    return record


def test_file_rolls_at_utc_midnight_as_well_as_on_size(tmp_path: Path) -> None:
    from gal_friday.logs import JsonFormatter, SizeAndDayRotatingFileHandler

    path = tmp_path / "bot.jsonl"
    handler = SizeAndDayRotatingFileHandler(path, maxBytes=10_000, backupCount=5)
    handler.setFormatter(JsonFormatter())
    midnight = (int(time.time()) // 86_400 + 1) * 86_400
    try:
        handler.emit(_record(midnight - 1, "last of the day"))
        handler.emit(_record(midnight - 0.5, "still the same day"))
        handler.emit(_record(midnight + 1, "first of the next day"))
        for i in range(200):  # then size: ~100 bytes a line, 10 kB a file
            handler.emit(_record(midnight + 2 + i, "x" * 40))
    finally:
        handler.close()
    rolled = path.with_name("bot.jsonl.1"), path.with_name("bot.jsonl.2"), path
    oldest = sorted(path.parent.glob("bot.jsonl.*"))[-1]
    first_day = [json.loads(x)["event"] for x in oldest.read_text().splitlines()]
    assert first_day == ["last of the day", "still the same day"]
    assert all(p.exists() for p in rolled)
    assert all(p.stat().st_size <= 10_000 for p in path.parent.iterdir())


def test_a_restart_on_a_later_day_rolls_the_old_file(tmp_path: Path) -> None:
    from gal_friday.logs import SizeAndDayRotatingFileHandler

    path = tmp_path / "bot.jsonl"
    path.write_text('{"event": "yesterday"}\n')
    yesterday = time.time() - 86_400
    os.utime(path, (yesterday, yesterday))
    handler = SizeAndDayRotatingFileHandler(path, maxBytes=10_000, backupCount=2)
    try:
        handler.emit(_record(time.time(), "today"))
    finally:
        handler.close()
    assert "yesterday" in path.with_name("bot.jsonl.1").read_text()
    assert "yesterday" not in path.read_text()


def test_trade_attempt_lines_carry_the_signal_id(logged: tuple[io.StringIO, Path]) -> None:
    from gal_friday.logs import signal_context

    stream, _ = logged
    log = logging.getLogger("gal_friday.execution.handler")
    log.info("order request", extra={"client_order_id": "E-77", "signal_id": "sig-77"})
    log.warning("venue busy; retrying", extra={"client_order_id": "E-77"})
    with signal_context("sig-78"):
        log.info("signal approved")
    log.info("unrelated")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x.get("signal_id") for x in lines] == ["sig-77", "sig-77", "sig-78", None]
