"""Structured JSON-lines logging with secret redaction.

Every record is one JSON object: ``ts`` (UTC, milliseconds), ``level``, ``logger``, ``event``
(the message) and any ``extra`` fields. Output goes to stdout and/or a size-rotated file.
Known secret values (API key and secret) are replaced by ``***`` in every line, wherever they
appear, and fields whose names look secret are masked, so a careless ``extra`` cannot leak
them.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from gal_friday.config import LoggingSettings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SECRET_NAMES = ("secret", "api_key", "apikey", "token", "password", "api-sign", "signature")
REDACTED = "***"


def _utc_ms(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets redacted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                lowered = key.lower()
                out[key] = REDACTED if any(n in lowered for n in _SECRET_NAMES) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str, ensure_ascii=False)
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


def setup_logging(
    settings: LoggingSettings,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    to_file: bool = True,
) -> None:
    """Route the root logger to JSON lines on stdout and a rotating file, per settings."""
    formatter = JsonFormatter(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.level)
    if settings.stdout:
        console = logging.StreamHandler(stream or sys.stdout)
        console.setFormatter(formatter)
        root.addHandler(console)
    if to_file and settings.file:
        path = Path(settings.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=settings.max_bytes, backupCount=settings.backup_count,
            encoding="utf-8",
        )
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
