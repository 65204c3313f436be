"""Structured JSON-lines logging with secret redaction.

Every record is one JSON object: ``ts`` (UTC, milliseconds), ``level``, ``logger``, ``event``
(the message) and any ``extra`` fields. Output goes to stdout and/or a file rotated both by
size and at UTC midnight, so no file spans two UTC days and a day's trading is found by date.
Known secret values (API key and secret) are replaced by ``***`` in every line, wherever they
appear, and fields whose names look secret are masked, so a careless ``extra`` cannot leak
them.

Every line about a trade attempt carries its ``signal_id`` (the trade id of the audit
store), so ``grep`` on one id follows a trade from signal to P&L: a line that names a
``client_order_id`` gets the signal id that order was requested for (learned from the
"order request" line, or :func:`bind_order`), and code running inside
:func:`signal_context` gets that signal id.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
import os
import select
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gal_friday.config import LoggingSettings
from gal_friday.folders import make_folder

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SECRET_NAMES = ("secret", "api_key", "apikey", "token", "password", "api-sign", "signature")
REDACTED = "***"
_DAY_S = 86_400
_MAX_ORDERS = 50_000

_signal: contextvars.ContextVar[str | None] = contextvars.ContextVar("signal_id", default=None)
_order_signals: OrderedDict[str, str] = OrderedDict()  # client order id -> signal id


def bind_order(client_order_id: str, signal_id: str) -> None:
    """Log lines naming ``client_order_id`` will carry ``signal_id`` from now on."""
    _order_signals[client_order_id] = signal_id
    _order_signals.move_to_end(client_order_id)
    if len(_order_signals) > _MAX_ORDERS:
        _order_signals.popitem(last=False)


@contextlib.contextmanager
def signal_context(signal_id: str | None) -> Iterator[None]:
    """Lines logged inside (tasks created inside included) carry ``signal_id``."""
    token = _signal.set(signal_id)
    try:
        yield
    finally:
        _signal.reset(token)


class SignalIdFilter(logging.Filter):
    """Adds ``signal_id`` to trade-attempt lines that lack it (never drops a line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        coid = attrs.get("client_order_id")
        signal_id = attrs.get("signal_id")
        if signal_id is not None:
            if isinstance(coid, str):
                bind_order(coid, str(signal_id))
            return True
        found = _order_signals.get(coid) if isinstance(coid, str) else None
        found = found or _signal.get()
        if found is not None:
            record.signal_id = found
        return True


def _utc_day(epoch_s: float) -> int:
    return int(epoch_s // _DAY_S)


class SizeAndDayRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rolls over when the file would exceed ``maxBytes`` and when a record belongs to a
    later UTC day than the file (a restart on a new day rolls the old file too)."""

    def __init__(self, filename: Path, *, maxBytes: int, backupCount: int) -> None:
        super().__init__(filename, maxBytes=maxBytes, backupCount=backupCount, encoding="utf-8")
        path = Path(self.baseFilename)
        self.day = _utc_day(path.stat().st_mtime if path.exists() else time.time())

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        day = _utc_day(record.created)
        if day > self.day:
            self.day = day  # the next file is this record's day
            return True
        return bool(super().shouldRollover(record))


def stdout_closed() -> bool:
    """Whether the reader of stdout went away (``gal-friday config | head`` after ``head``
    exited): a pipe whose read end is closed polls as an error."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a StringIO, or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def quiet_stdout() -> None:
    """Send what is still buffered for a closed stdout nowhere, so the interpreter's final
    flush does not print a BrokenPipeError at exit."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class ConsoleHandler(logging.StreamHandler[TextIO]):
    """JSON lines on stdout. When the reader goes away (``gal-friday --no-ui | head``) the
    run goes on: this handler falls silent and the log file keeps every line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.reader_gone = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.reader_gone:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            self.reader_gone = True
            if self.stream is sys.stdout:
                quiet_stdout()
            logging.getLogger(__name__).warning("stdout closed; logging to the file only")
            return
        super().handleError(record)


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
    """Route the root logger to JSON lines on stdout and a file rotated by size and UTC day."""
    formatter = JsonFormatter(secrets)
    signal_ids = SignalIdFilter()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.level)
    if settings.stdout:
        console = ConsoleHandler(stream or sys.stdout)
        console.setFormatter(formatter)
        console.addFilter(signal_ids)
        root.addHandler(console)
    if to_file and settings.file:
        path = Path(settings.file)
        make_folder(path.parent, "log folder")
        file_handler = SizeAndDayRotatingFileHandler(
            path, maxBytes=settings.max_bytes, backupCount=settings.backup_count
        )
        file_handler.setFormatter(formatter)
        file_handler.addFilter(signal_ids)
        root.addHandler(file_handler)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
