"""Kraken private-API authentication: the ``API-Sign`` header and the per-key nonce.

Kraken authenticates every private REST call with two things this module owns:

* ``API-Sign`` = base64(HMAC-SHA512(key=base64decode(secret),
  msg=uri_path + SHA256(nonce + body))). The body already contains ``nonce=...``; the nonce
  is prepended again before hashing (Kraken's documented scheme, not a mistake).
* ``nonce``: an unsigned 64-bit integer that must strictly increase for each API key, across
  every process and restart that uses the key; a repeated or smaller value is refused with
  ``EAPI:Invalid nonce`` and too many of those earn a temporary ban. ``NonceSource`` issues
  nanosecond-based values (the resolution Kraken's docs recommend) that never repeat or go
  backwards, even when the clock does, and can persist a high-water mark so a quick restart
  (or a clock stepped back while we were down) cannot reuse a value.

Nothing here logs, and no repr or exception message contains a secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gal_friday.folders import make_folder

MAX_NONCE = 2**64 - 1  # Kraken's nonce is an unsigned 64-bit integer
DEFAULT_LEASE_NS = 1_000_000_000


def sign(uri_path: str, nonce: str, body: bytes, secret_b64: str) -> str:
    """The ``API-Sign`` header for one request.

    ``body`` must be the exact bytes sent (the signature covers them byte for byte), and
    ``nonce`` the same string the body carries. Raises ``ValueError`` (without echoing the
    secret) if the secret is not base64.
    """
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the API secret is not valid base64") from None
    digest = hashlib.sha256(nonce.encode() + body).digest()
    mac = hmac.new(key, uri_path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


class NonceSource:
    """Strictly increasing nonces for one API key, safe to share between threads and tasks.

    Each value is ``max(previous + 1, clock())`` with ``clock`` = ``time.time_ns``, so nonces
    track wall time when they can and still increase when the clock stalls or steps back.
    Use exactly one source per API key in a process: two sources for one key race each other.

    With ``state_path`` the source survives restarts: it starts above the value stored there,
    and before issuing a nonce beyond the stored mark it atomically stores a new mark
    ``lease_ns`` ahead. Writing a lease rather than every nonce keeps disk writes to about one
    per ``lease_ns`` of nonce advance while guaranteeing every issued nonce is below the stored
    mark, so the next process never reissues one (it may skip up to ``lease_ns`` values, which
    Kraken allows: nonces need only increase).
    """

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        *,
        lease_ns: int = DEFAULT_LEASE_NS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if lease_ns < 1:
            raise ValueError("lease_ns must be positive")
        self._lock = threading.Lock()
        self._clock = clock
        self._lease = lease_ns
        self._path = Path(state_path) if state_path is not None else None
        self._last = _read_mark(self._path) if self._path is not None else 0
        self._mark = self._last

    @property
    def last(self) -> int:
        """The most recently issued nonce (or the restored mark; 0 if none yet)."""
        return self._last

    def next_int(self) -> int:
        """The next nonce as an integer."""
        with self._lock:
            nonce = max(self._last + 1, self._clock())
            if nonce > MAX_NONCE:
                raise OverflowError("nonce would exceed Kraken's unsigned 64-bit range")
            if self._path is not None and nonce > self._mark:
                mark = min(nonce + self._lease, MAX_NONCE)
                _write_mark(self._path, mark)  # persisted before the nonce is handed out
                self._mark = mark
            self._last = nonce
            return nonce

    def next(self) -> str:
        """The next nonce as the decimal string Kraken's body and signature use."""
        return str(self.next_int())

    def __repr__(self) -> str:
        return f"NonceSource(last={self._last}, state_path={self._path!s})"


def _read_mark(path: Path) -> int:
    """The stored high-water mark, 0 if there is none yet.

    A corrupt file is an error, not a reset: silently restarting from the clock could reuse
    nonces if the clock had been stepped back.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    try:
        mark = int(text)
    except ValueError:
        raise ValueError(f"nonce state file {path} is corrupt; expected one integer") from None
    if not 0 <= mark <= MAX_NONCE:
        raise ValueError(f"nonce state file {path} holds an out-of-range value")
    return mark


def _write_mark(path: Path, mark: int) -> None:
    """Replace ``path`` with ``mark`` atomically (temp file, fsync, rename): a crash leaves
    either the old or the new value, never a torn file."""
    make_folder(path.parent, "nonce state folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{mark}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
