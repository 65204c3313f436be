"""Kraken's error strings as the venue's error classes (sans-IO).

The class says what the caller may safely do next (see ``gal_friday.execution.venue``):

* ``OrderRejected``: Kraken refused the request and nothing changed (insufficient funds,
  minimums, tick size, unknown order); not an outage, never retried as is.
* ``VenueBusy``: not done, safe to retry later (rate limits, throttling with the time Kraken
  names, service unavailable, cancel-only / post-only market modes).
* ``VenueUncertain``: it may or may not have happened (an internal error on a request that
  changes orders, a nonce refusal on AddOrder): resolve by lookup, never by resending.
* ``VenueAuthError``: credentials, permissions or the WebSocket token; a one-line message
  that says what to check, never the secret.

The same mapping serves WebSocket method names (``add_order``) and REST ones (``AddOrder``),
and REST client errors (``from_kraken_error``).
"""

from __future__ import annotations

import time

from gal_friday.execution.venue import (
    OrderRejected,
    VenueAuthError,
    VenueBusy,
    VenueError,
    VenueUncertain,
)
from gal_friday.kraken.private import (
    ERR_INVALID_KEY,
    ERR_INVALID_NONCE,
    ERR_INVALID_SIGNATURE,
    ERR_PERMISSION,
    ORDER_METHODS,
    KrakenAuthError,
    KrakenInvalidNonce,
    KrakenUncertain,
    permission_message,
)
from gal_friday.kraken.rest import KrakenError, KrakenUnavailable

__all__ = ["UNKNOWN_ORDER", "from_kraken_error", "venue_error"]

_REJECTED = (
    "EOrder:Insufficient funds",
    "EOrder:Order minimum not met",
    "EOrder:Cost minimum not met",
    "EOrder:Tick size check failed",
    "EOrder:Invalid price",
    "EGeneral:Invalid arguments",
    "EOrder:Orders limit exceeded",
    "EOrder:Unknown order",
    "EOrder:Positions limit exceeded",
)
_BUSY = (
    "EOrder:Rate limit exceeded",
    "EOrder:Domain rate limit exceeded",
    "EAPI:Rate limit exceeded",
    "EGeneral:Too many requests",
    "EService:Unavailable",
    "EService:Busy",
    "EService:Throttled",
    "EService:Market in cancel_only mode",
    "EService:Market in post_only mode",
    "EGeneral:Temporary lockout",
    "EService:Deadline elapsed",
)
_THROTTLED = "EService:Throttled"
UNKNOWN_ORDER = "EOrder:Unknown order"


def venue_error(
    error: str, method: str, *, changes_orders: bool, now_s: float | None = None
) -> VenueError:
    """The venue error for one Kraken error string on ``method`` (REST or WS name).

    The class says what the caller may safely do next (see ``gal_friday.execution.venue``);
    the message is one line, Kraken's own words prefixed by the method.
    """
    line = f"Kraken {method}: {error}"
    if error.startswith(_REJECTED):
        return OrderRejected(line)
    if error.startswith(_BUSY):
        return VenueBusy(line, _retry_after(error, now_s))
    auth = _auth_message(error, method)
    if auth is not None:
        return VenueAuthError(auth)
    if error.startswith(ERR_INVALID_NONCE):
        # AddOrder is never retried on a nonce refusal: resolve it by lookup instead.
        return VenueUncertain(line) if method in ("AddOrder", "add_order") else VenueBusy(line)
    if error.startswith("EGeneral:Internal error"):
        return VenueUncertain(line) if changes_orders else VenueBusy(line)
    if changes_orders or error.startswith(("EOrder:", "Unsupported field")):
        return OrderRejected(line)
    return VenueBusy(line)


def _retry_after(error: str, now_s: float | None) -> float | None:
    """``EService:Throttled: <unix ts>`` -> seconds until ts."""
    if not error.startswith(_THROTTLED):
        return None
    try:
        until = float(error.rsplit(":", 1)[1].strip())
    except (IndexError, ValueError):
        return None
    return max(0.0, until - (time.time() if now_s is None else now_s))


def _auth_message(error: str, method: str) -> str | None:
    """A user-facing message if ``error`` is about credentials, permissions or the token."""
    if error.startswith(ERR_INVALID_KEY):
        return (
            f"Kraken rejected the API key ({ERR_INVALID_KEY}) on {method}: check that "
            "KRAKEN_API_KEY is the key's public part and the key still exists."
        )
    if error.startswith(ERR_INVALID_SIGNATURE):
        return (
            f"Kraken rejected the request signature ({ERR_INVALID_SIGNATURE}) on {method}: "
            "KRAKEN_API_SECRET does not belong to KRAKEN_API_KEY."
        )
    if error.startswith(ERR_PERMISSION):
        return permission_message(method)
    if error.startswith("EAuth") or "token" in error.lower():
        return (
            f"Kraken refused the WebSocket token on {method} ({error}): check the key's "
            '"WebSocket interface" permission and the system clock.'
        )
    return None


def from_kraken_error(exc: KrakenError) -> VenueError:
    """A REST client error as the venue error that says what is safe next."""
    changes = exc.method in ORDER_METHODS
    if isinstance(exc, KrakenUncertain):
        return VenueUncertain(f"Kraken {exc.method}: outcome unknown ({'; '.join(exc.errors)})")
    if isinstance(exc, KrakenAuthError):
        return VenueAuthError(str(exc))
    if isinstance(exc, KrakenInvalidNonce):
        return venue_error(ERR_INVALID_NONCE, exc.method, changes_orders=changes)
    if isinstance(exc, KrakenUnavailable) and not any(e.startswith("E") for e in exc.errors):
        return VenueBusy(f"Kraken {exc.method}: unavailable ({'; '.join(exc.errors)})")
    first = exc.errors[0] if exc.errors else "unknown error"
    return venue_error(first, exc.method, changes_orders=changes)
