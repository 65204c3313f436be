"""Recorder of raw Kraken public WebSocket frames, replayable by the simulator.

File format: gzip-compressed JSON lines. The first line is a header
``{"format": "gal-friday-recording", "version": 1, "source", "started", "pairs", "depth"}``;
every further line is one received frame ``{"t": <receive time, epoch ns>, "raw": "<text>"}``
exactly as it came off the socket, so nothing is lost to re-serialisation. The stream is
flushed every few seconds so a killed recorder still leaves a readable file.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

FORMAT = "gal-friday-recording"
VERSION = 1


class RecordingError(Exception):
    """The file is not a recording this version can read."""


class Recorder:
    """Appends frames to a new recording file."""

    def __init__(self, path: Path, *, source: str, pairs: tuple[str, ...], depth: int,
                 flush_every_s: float = 2.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.frames = 0
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._fh: TextIO = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115
        header = {"format": FORMAT, "version": VERSION, "source": source,
                  "started": datetime.now(UTC).isoformat(), "pairs": list(pairs), "depth": depth}
        self._fh.write(json.dumps(header) + "\n")

    def write(self, ts_ns: int, raw: str) -> None:
        self._fh.write(json.dumps({"t": ts_ns, "raw": raw}, ensure_ascii=False) + "\n")
        self.frames += 1
        now = time.monotonic()
        if now - self._last_flush >= self._flush_every_s:
            self._fh.flush()
            self._last_flush = now

    def close(self) -> None:
        self._fh.close()


def read_recording(path: Path) -> tuple[dict[str, Any], Iterator[tuple[int, str]]]:
    """The header and an iterator of ``(receive_ns, raw_text)``; a file cut short by a crash
    yields what it holds."""
    fh = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115
    try:
        header = json.loads(fh.readline())
    except (OSError, EOFError, ValueError) as exc:
        fh.close()
        raise RecordingError(f"{path} is not a gal-friday recording: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fh.close()
        raise RecordingError(f"{path} is not a gal-friday recording")
    if header.get("version") != VERSION:
        fh.close()
        raise RecordingError(f"{path}: recording version {header.get('version')} unsupported")

    def frames() -> Iterator[tuple[int, str]]:
        with fh:
            try:
                for line in fh:
                    item = json.loads(line)
                    yield int(item["t"]), str(item["raw"])
            except (EOFError, gzip.BadGzipFile, ValueError, KeyError):
                return  # truncated by a crash: keep what was complete

    return header, frames()
