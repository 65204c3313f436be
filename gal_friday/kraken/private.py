"""Kraken private REST client (aiohttp): signed ``POST /0/private/<Method>`` calls.

Only what the bot needs before it trades: ``Balance`` and ``GetWebSocketsToken`` (the token
the private WebSocket v2 requires), over a generic ``call``. Errors reuse the public client's
classes and ``classify`` (rate limits and outages stay retryable) and add two that a retry
cannot fix: ``KrakenAuthError`` (wrong key or secret, or a missing permission; its message
tells the user what to change) and ``KrakenInvalidNonce``.

Calls on one client are serialised: Kraken refuses a nonce smaller than one it has already
seen for the key, and two requests in flight at once can arrive in either order. Private
REST traffic is light (order flow goes over the WebSocket), so one call at a time costs
little and removes the race.

The secret stays inside ``Credentials`` (a ``SecretStr``) and is unwrapped only to sign; it
is never logged, never put in an exception and never part of a repr.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from gal_friday.config import Credentials
from gal_friday.kraken.auth import NonceSource, sign
from gal_friday.kraken.rest import (
    KrakenError,
    KrakenRateLimited,
    KrakenUnavailable,
    RestSession,
    classify,
)

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(float_hook=str)

ERR_INVALID_KEY = "EAPI:Invalid key"
ERR_INVALID_SIGNATURE = "EAPI:Invalid signature"
ERR_INVALID_NONCE = "EAPI:Invalid nonce"
ERR_PERMISSION = "EGeneral:Permission denied"
_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


class KrakenAuthError(KrakenError):
    """Kraken refused our credentials or their permissions; retrying cannot help.

    ``str()`` is a one-line message for the user saying what to fix; Kraken's own strings
    stay in ``errors``.
    """

    retryable = False

    def __init__(self, errors: list[str], method: str, message: str) -> None:
        super().__init__(errors, method)
        self.message = message
        self.args = (message,)

    def __str__(self) -> str:
        return self.message


class KrakenInvalidNonce(KrakenError):
    """Kraken saw a nonce no larger than one it already accepted for this key.

    Usually another program (or another ``NonceSource``) uses the same key, or a previous run
    issued larger nonces than this clock now gives. Not marked retryable: repeated invalid
    nonces earn a temporary ban, so the caller should decide (one retry with a fresh nonce is
    safe; a loop is not).
    """

    retryable = False


def classify_private(errors: list[str], method: str) -> KrakenError:
    """The exception for a private call's error strings: auth and nonce first, then the
    public ``classify`` (rate limit, unavailable, everything else)."""
    if any(e.startswith(ERR_INVALID_KEY) for e in errors):
        return KrakenAuthError(errors, method, (
            f"Kraken rejected the API key ({ERR_INVALID_KEY}) on {method}: check that "
            "KRAKEN_API_KEY is the key's public part and the key still exists."))
    if any(e.startswith(ERR_INVALID_SIGNATURE) for e in errors):
        return KrakenAuthError(errors, method, (
            f"Kraken rejected the request signature ({ERR_INVALID_SIGNATURE}) on {method}: "
            "KRAKEN_API_SECRET does not belong to KRAKEN_API_KEY or was copied incompletely."))
    if any(e.startswith(ERR_PERMISSION) for e in errors):
        if method == "GetWebSocketsToken":
            hint = ('the API key lacks the "WebSocket interface" permission; enable it for '
                    "this key in Kraken's API settings")
        else:
            hint = f"the API key lacks the permission {method} needs; enable it at Kraken"
        return KrakenAuthError(errors, method, f"{method}: {hint} ({ERR_PERMISSION}).")
    if any(e.startswith(ERR_INVALID_NONCE) for e in errors):
        return KrakenInvalidNonce(errors, method)
    return classify(errors, method)


class KrakenPrivateRest(RestSession):
    """Signed private REST calls for one API key.

    ``nonce`` must be the only ``NonceSource`` used with this key in the process.
    """

    def __init__(self, base_url: str, credentials: Credentials, nonce: NonceSource,
                 timeout_s: float = 10.0) -> None:
        if credentials.api_key is None or credentials.api_secret is None:
            raise KrakenAuthError(["missing credentials"], "", (
                "Kraken private API needs KRAKEN_API_KEY and KRAKEN_API_SECRET in the "
                "environment."))
        super().__init__(base_url, timeout_s)
        self._credentials = credentials
        self._nonce = nonce
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KrakenPrivateRest(base_url={self.base_url!r})"

    async def call(self, method: str, params: dict[str, str] | None = None) -> Any:
        """POST ``/0/private/<method>`` signed; returns ``result`` or raises a KrakenError."""
        async with self._lock:
            return await self._call(method, params or {})

    async def _call(self, method: str, params: dict[str, str]) -> Any:
        key, secret = self._credentials.api_key, self._credentials.api_secret
        assert key is not None and secret is not None  # checked in __init__
        uri_path = f"/0/private/{method}"
        nonce = self._nonce.next()
        body = urlencode({"nonce": nonce, **params}).encode()
        headers = {
            "API-Key": key.get_secret_value(),
            "API-Sign": sign(uri_path, nonce, body, secret.get_secret_value()),
            "Content-Type": _CONTENT_TYPE,
        }
        log.debug("private call %s", method)
        try:
            async with self.http().post(self.base_url + uri_path, data=body,
                                          headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KrakenUnavailable([f"{type(exc).__name__}: {exc}"], method) from None
        if status == 429:  # Kraken's edge throttles with a plain HTTP 429
            raise KrakenRateLimited([f"HTTP {status}"], method)
        if status >= 500:
            raise KrakenUnavailable([f"HTTP {status}"], method)
        try:
            payload = _decoder.decode(raw)
            errors = payload.get("error") or []
        except (msgspec.DecodeError, AttributeError):
            if status >= 400:
                raise KrakenError([f"HTTP {status}"], method) from None
            raise KrakenUnavailable(["response is not Kraken JSON"], method) from None
        if errors:
            raise classify_private([str(e) for e in errors], method)
        if status >= 400:
            raise KrakenError([f"HTTP {status}"], method)
        return payload["result"]

    async def balance(self) -> dict[str, str]:
        """Asset balances keyed by Kraken's legacy asset codes (``ZUSD``, ``XXRP``), amounts
        as strings so no precision is lost."""
        result = await self.call("Balance")
        return {str(k): str(v) for k, v in result.items()}

    async def websocket_token(self) -> str:
        """A token for the private WebSocket v2 (valid 15 minutes until used; fetch a new
        one per connection). Needs the key's "WebSocket interface" permission."""
        result = await self.call("GetWebSocketsToken")
        return str(result["token"])
