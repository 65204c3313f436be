"""Session journal: every input and decision of a run, in bus order, for replay [FR-1008].

A run records to ``<data_dir>/sessions/<UTC start>.jsonl.gz``: a header line (session id, mode,
exchange, pairs, models, the effective configuration without secrets), then one line per event
``[type, {fields}]`` in the order the bus delivered it. Recorded are the inputs a decision can
depend on (market data, instruments, features, predictions, exchange reports, operator
commands, reconciliations) and the decisions themselves (proposed signals, risk verdicts, order
requests), so ``gal-friday replay`` can feed the inputs to the same strategy, risk, portfolio
and execution code and compare its decisions with the recorded ones.

The recorder is one more BLOCK subscriber with a deep queue: it never drops a line (a replay
of an incomplete journal would prove nothing), and writes through gzip off the trading path's
handlers.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.config import Settings
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    Event,
    ExecutionReportEvent,
    FeatureEvent,
    FlattenEvent,
    HaltEvent,
    InstrumentEvent,
    OrderAdoptedEvent,
    OrderRequestEvent,
    PairRestoredEvent,
    PredictionEvent,
    ReconciliationEvent,
    ReduceEvent,
    ResumeEvent,
    TradeEvent,
    TradeSignalApprovedEvent,
    TradeSignalProposedEvent,
    TradeSignalRejectedEvent,
    TradingStartedEvent,
    TradingStateChangedEvent,
)
from gal_friday.folders import make_folder

log = logging.getLogger(__name__)

RECORDED: tuple[type[Event], ...] = (
    BookEvent,
    BookInvalidatedEvent,
    TradeEvent,
    CandleEvent,
    InstrumentEvent,
    FeatureEvent,
    PredictionEvent,
    TradeSignalProposedEvent,
    TradeSignalApprovedEvent,
    TradeSignalRejectedEvent,
    OrderRequestEvent,
    ExecutionReportEvent,
    HaltEvent,
    ResumeEvent,
    FlattenEvent,
    ReduceEvent,
    ReconciliationEvent,
    TradingStartedEvent,
    OrderAdoptedEvent,
    PairRestoredEvent,
    TradingStateChangedEvent,
)
_TYPES = {t.__name__: t for t in RECORDED}
_encoder = msgspec.json.Encoder()


def _float_fields(cls: type[Event]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of ``cls``'s float fields and of its tuple-of-float fields."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    scalars, tuples = [], []
    for f in info.fields:
        if isinstance(f.type, msgspec.inspect.FloatType):
            scalars.append(f.encode_name)
        elif isinstance(f.type, msgspec.inspect.VarTupleType) and isinstance(
            f.type.item_type, msgspec.inspect.FloatType
        ):
            tuples.append(f.encode_name)
    return tuple(scalars), tuple(tuples)


_FLOATS = {name: _float_fields(t) for name, t in _TYPES.items()}


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, None: math.nan}


def _encode(event: Event) -> bytes:
    """The event as JSON. JSON has no NaN or infinity (the encoder would write null for
    both): a non-finite float is written as the string "NaN", "Infinity" or "-Infinity"."""
    scalars, tuples = _FLOATS[type(event).__name__]
    if not any(not math.isfinite(getattr(event, k)) for k in scalars) and not any(
        not math.isfinite(v) for k in tuples for v in getattr(event, k)
    ):
        return _encoder.encode(event)
    fields = msgspec.to_builtins(event)
    for key in scalars:
        fields[key] = _text(getattr(event, key))
    for key in tuples:
        fields[key] = [_text(v) for v in getattr(event, key)]
    return _encoder.encode(fields)


def _text(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _non_finite(fields: Any, cls: type[Event]) -> Any:
    """Float fields written as "NaN" / "Infinity" / "-Infinity" (or null, as journals before
    them held NaN) read back as those floats."""
    scalars, tuples = _FLOATS[cls.__name__]
    if not isinstance(fields, dict):
        return fields
    for key in scalars:
        value = fields.get(key, 0.0)
        if not isinstance(value, int | float):
            fields[key] = _NON_FINITE.get(value, value)
    for key in tuples:
        values = fields.get(key)
        if isinstance(values, list) and not all(isinstance(v, int | float) for v in values):
            fields[key] = [
                v if isinstance(v, int | float) else _NON_FINITE.get(v, v) for v in values
            ]
    return fields


class SessionError(Exception):
    """A journal that cannot be read; the message says which file and why."""


class SessionRecorder:
    """Writes the session journal of one run."""

    def __init__(
        self, settings: Settings, *, models: tuple[str, ...] = (), clock_ns: Any = time.time_ns
    ) -> None:
        started = clock_ns()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started / 1e9))
        self.directory = Path(settings.paths.data_dir) / "sessions"
        self.path = self.directory / f"{stamp}-{settings.exchange}-{settings.mode}.jsonl.gz"
        self.header = {
            "session": self.path.name.removesuffix(".jsonl.gz"),
            "started_ns": started,
            "mode": settings.mode,
            "exchange": settings.exchange,
            "pairs": list(settings.pairs),
            "models": list(models),
            "config": settings.model_dump(mode="json"),
        }
        self._file: gzip.GzipFile | None = None
        self.subscription: Subscription | None = None
        self.recorded = 0

    def attach(self, bus: EventBus) -> None:
        make_folder(self.directory.parent, "data folder")
        make_folder(self.directory, "session journal folder")
        base, n = self.path.name.removesuffix(".jsonl.gz"), 1
        while self.path.exists():  # two runs started within the same second: keep both
            n += 1
            self.path = self.directory / f"{base}-{n}.jsonl.gz"
        self.header["session"] = self.path.name.removesuffix(".jsonl.gz")
        handle = gzip.GzipFile(self.path, "xb", compresslevel=1)
        handle.write(json.dumps(self.header).encode() + b"\n")
        self._file = handle
        self.subscription = bus.subscribe(
            RECORDED, self.on_event, name="session", policy=Policy.BLOCK, maxsize=100_000
        )
        log.info("recording the session", extra={"path": str(self.path)})

    def on_event(self, event: Event) -> None:
        assert self._file is not None
        self._file.write(b'["' + type(event).__name__.encode() + b'",' + _encode(event) + b"]\n")
        self.recorded += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            log.info("session recorded", extra={"path": str(self.path), "events": self.recorded})


def read_session(path: str | Path) -> tuple[dict[str, Any], JournalEvents]:
    """The header and the events of a journal (lazily; a truncated tail ends the stream,
    since a crashed run's last line may be cut)."""
    path = Path(path)
    try:
        handle = gzip.GzipFile(path, "rb")
        header = json.loads(handle.readline())
    except (OSError, ValueError, EOFError) as exc:
        raise SessionError(f"{path}: not a Gal-Friday session journal ({exc})") from None
    if not isinstance(header, dict) or "session" not in header:
        raise SessionError(f"{path}: not a Gal-Friday session journal (no header)")
    return header, JournalEvents(path, handle)


class JournalEvents:
    """The events of a journal, read lazily; ``truncated`` says, once read to the end, that
    the file ends early (a crashed run: no gzip trailer, or a cut last line), so decisions
    made after its last line may be missing from it."""

    def __init__(self, path: Path, handle: gzip.GzipFile) -> None:
        self.path = path
        self.truncated = False
        self._lines = self._read(handle)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._lines)

    def _read(self, handle: gzip.GzipFile) -> Iterator[Event]:
        path = str(self.path)
        with handle:
            while True:
                try:
                    line = handle.readline()
                except (OSError, EOFError):
                    self.truncated = True
                    log.warning("session journal ends early (truncated)", extra={"path": path})
                    return
                if not line:
                    return
                event = self._decode(line)
                if event is not None:
                    yield event

    def _decode(self, line: bytes) -> Event | None:
        try:
            name, fields = json.loads(line)
            cls = _TYPES[name]
            return msgspec.convert(_non_finite(fields, cls), cls)
        except (ValueError, KeyError, TypeError, msgspec.ValidationError):
            log.warning("unreadable journal line skipped", extra={"path": str(self.path)})
            return None
