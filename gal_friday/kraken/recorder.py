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
from typing import IO, Any, TextIO

from gal_friday.folders import make_folder

FORMAT = "gal-friday-recording"
VERSION = 1


class RecordingError(Exception):
    """The file is not a recording this version can read."""


class Recorder:
    """Appends frames to a new recording file."""

    def __init__(
        self,
        path: Path,
        *,
        source: str,
        pairs: tuple[str, ...],
        depth: int,
        flush_every_s: float = 2.0,
    ) -> None:
        make_folder(path.parent, "recording folder")
        self.path = path
        self.frames = 0
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        try:
            self._fh: TextIO = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise RecordingError(f"cannot write the recording {path}: {exc.strerror}") from None
        header = {
            "format": FORMAT,
            "version": VERSION,
            "source": source,
            "started": datetime.now(UTC).isoformat(),
            "pairs": list(pairs),
            "depth": depth,
        }
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


def read_recording(path: Path) -> tuple[dict[str, Any], RecordingFrames]:
    """The header and an iterator of ``(receive_ns, raw_text)``; a file cut short by a crash
    yields what it holds, a damaged line is skipped and counted."""
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
    pairs, depth = header.get("pairs"), header.get("depth")
    if (
        pairs is not None
        and not (isinstance(pairs, list) and all(isinstance(p, str) for p in pairs))
    ) or (depth is not None and (not isinstance(depth, int) or isinstance(depth, bool))):
        fh.close()
        raise RecordingError(
            f"{path}: damaged header (pairs must be a list of pairs, depth a whole number)"
        )
    return header, RecordingFrames(fh)


class RecordingFrames:
    """``(receive_ns, raw_text)`` of a recording's lines. A file cut by a crash ends the
    stream (``truncated``); a damaged line inside is skipped and counted (``skipped``)."""

    def __init__(self, fh: IO[str]) -> None:
        self.skipped = 0
        self.truncated = False
        self._lines = self._read(fh)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return self

    def __next__(self) -> tuple[int, str]:
        return next(self._lines)

    def _read(self, fh: IO[str]) -> Iterator[tuple[int, str]]:
        with fh:
            while True:
                try:
                    line = fh.readline()
                except (EOFError, gzip.BadGzipFile, OSError, UnicodeDecodeError):
                    self.truncated = True  # cut by a crash: keep what was complete
                    return
                if not line:
                    return
                try:
                    item = json.loads(line)
                    yield int(item["t"]), str(item["raw"])
                except (ValueError, KeyError, TypeError):
                    if line.endswith("\n"):
                        self.skipped += 1  # a damaged line: the rest is still good
                    else:
                        self.truncated = True  # the last line, cut mid-write
                        return
