"""Structured logs: one JSON object per line, UTC milliseconds, secrets never written."""

from __future__ import annotations

import io
import json
import logging
import re
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
    logged: tuple[io.StringIO, Path]
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
