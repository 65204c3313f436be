"""Kraken private REST client (aiohttp): signed ``POST /0/private/<Method>`` calls.

``Balance`` and ``GetWebSocketsToken`` (the token the private WebSocket v2 requires), the
order methods (``AddOrder``, ``CancelOrder``, ``CancelAll``, ``CancelAllOrdersAfter``) and the
order queries (``OpenOrders``, ``ClosedOrders``, ``QueryOrders``, ``TradesHistory``), over a
generic ``call``. Errors reuse the public client's classes and ``classify`` (rate limits and
outages stay retryable) and add three: ``KrakenAuthError`` (wrong key or secret, or a missing
permission; its message tells the user what to change), ``KrakenInvalidNonce``, and
``KrakenUncertain``: an order-changing request whose connection failed *after* it may have been
sent. Such a request may have been executed, so it is not "unavailable" (retry-safe): the caller
must look the order up before doing anything else. Failing to connect at all is still
``KrakenUnavailable``, because nothing was sent.

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
from decimal import Decimal
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
from gal_friday.kraken.symbols import rest_altname

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


class KrakenUncertain(KrakenError):
    """An order-changing request may or may not have reached Kraken (timeout or connection
    lost after sending, or a nonce refusal on AddOrder, which the venue resolves by lookup).
    Never retry blindly: look the order up first."""

    retryable = False


# Order-changing methods: a transport failure after sending leaves their effect unknown.
ORDER_METHODS = frozenset(
    {
        "AddOrder",
        "AddOrderBatch",
        "AmendOrder",
        "EditOrder",
        "CancelOrder",
        "CancelOrderBatch",
        "CancelAll",
        "CancelAllOrdersAfter",
    }
)

# The key permission (as Kraken's API-key settings name it) each method needs, so a
# "Permission denied" can tell the user exactly which box to tick.
_PERMISSIONS = {
    "GetWebSocketsToken": "WebSocket interface",
    "Balance": "Funds permissions - Query",
    "AddOrder": "Orders and trades - Create & modify orders",
    "add_order": "Orders and trades - Create & modify orders",
    "CancelOrder": "Orders and trades - Cancel & close orders",
    "cancel_order": "Orders and trades - Cancel & close orders",
    "CancelAll": "Orders and trades - Cancel & close orders",
    "cancel_all": "Orders and trades - Cancel & close orders",
    "CancelAllOrdersAfter": "Orders and trades - Cancel & close orders",
    "cancel_all_orders_after": "Orders and trades - Cancel & close orders",
    "OpenOrders": "Orders and trades - Query open orders & trades",
    "ClosedOrders": "Orders and trades - Query closed orders & trades",
    "QueryOrders": "Orders and trades - Query closed orders & trades",
    "TradesHistory": "Orders and trades - Query closed orders & trades",
}


def permission_message(method: str) -> str:
    """The one-line user message for ``EGeneral:Permission denied`` on ``method``."""
    if method == "GetWebSocketsToken":
        hint = (
            'the API key lacks the "WebSocket interface" permission; enable it for '
            "this key in Kraken's API settings"
        )
    elif method in _PERMISSIONS:
        hint = (
            f'the API key lacks the "{_PERMISSIONS[method]}" permission; enable it for '
            "this key in Kraken's API settings"
        )
    else:
        hint = f"the API key lacks the permission {method} needs; enable it at Kraken"
    return f"{method}: {hint} ({ERR_PERMISSION})."


def classify_private(errors: list[str], method: str) -> KrakenError:
    """The exception for a private call's error strings: auth and nonce first, then the
    public ``classify`` (rate limit, unavailable, everything else)."""
    if any(e.startswith(ERR_INVALID_KEY) for e in errors):
        return KrakenAuthError(
            errors,
            method,
            (
                f"Kraken rejected the API key ({ERR_INVALID_KEY}) on {method}: check that "
                "KRAKEN_API_KEY is the key's public part and the key still exists."
            ),
        )
    if any(e.startswith(ERR_INVALID_SIGNATURE) for e in errors):
        return KrakenAuthError(
            errors,
            method,
            (
                f"Kraken rejected the request signature ({ERR_INVALID_SIGNATURE}) on {method}: "
                "KRAKEN_API_SECRET does not belong to KRAKEN_API_KEY or was copied incompletely."
            ),
        )
    if any(e.startswith(ERR_PERMISSION) for e in errors):
        return KrakenAuthError(errors, method, permission_message(method))
    if any(e.startswith(ERR_INVALID_NONCE) for e in errors):
        return KrakenInvalidNonce(errors, method)
    return classify(errors, method)


class KrakenPrivateRest(RestSession):
    """Signed private REST calls for one API key.

    ``nonce`` must be the only ``NonceSource`` used with this key in the process.
    """

    def __init__(
        self, base_url: str, credentials: Credentials, nonce: NonceSource, timeout_s: float = 10.0
    ) -> None:
        if credentials.api_key is None or credentials.api_secret is None:
            raise KrakenAuthError(
                ["missing credentials"],
                "",
                (
                    "Kraken private API needs KRAKEN_API_KEY and KRAKEN_API_SECRET in the "
                    "environment."
                ),
            )
        super().__init__(base_url, timeout_s)
        self._credentials = credentials
        self._nonce = nonce
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KrakenPrivateRest(base_url={self.base_url!r})"

    async def call(self, method: str, params: dict[str, str] | None = None) -> Any:
        """POST ``/0/private/<method>`` signed; returns ``result`` or raises a KrakenError.

        A read refused with ``EAPI:Invalid nonce`` is retried once with a fresh nonce (safe:
        it changes nothing, and one retry cannot earn a ban). An order-changing method is not
        retried: AddOrder's nonce refusal surfaces as ``KrakenUncertain`` so the caller looks
        the order up rather than risk a duplicate.
        """
        async with self._lock:
            try:
                return await self._call(method, params or {})
            except KrakenInvalidNonce as exc:
                if method == "AddOrder":
                    raise KrakenUncertain(exc.errors, method) from None
                if method in ORDER_METHODS:
                    raise
                log.warning("invalid nonce on %s; retrying once with a fresh nonce", method)
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
            async with self.http().post(
                self.base_url + uri_path, data=body, headers=headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing was sent: no connection was ever made. Safe to retry.
            raise KrakenUnavailable([f"{type(exc).__name__}: {exc}"], method) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors = [f"{type(exc).__name__}: {exc}"]
            if method in ORDER_METHODS:  # it may have been sent and executed
                raise KrakenUncertain(errors, method) from None
            raise KrakenUnavailable(errors, method) from None
        if status == 429:  # Kraken's edge throttles with a plain HTTP 429
            raise KrakenRateLimited([f"HTTP {status}"], method)
        # A 5xx or an unreadable body came from *something* that received the request: for an
        # order-changing method (a gateway timeout in front of a busy engine, say) it may
        # have been executed.
        unreadable = KrakenUncertain if method in ORDER_METHODS else KrakenUnavailable
        if status >= 500:
            raise unreadable([f"HTTP {status}"], method)
        try:
            payload = _decoder.decode(raw)
            errors = payload.get("error") or []
        except (msgspec.DecodeError, AttributeError):
            if status >= 400:
                raise KrakenError([f"HTTP {status}"], method) from None
            raise unreadable(["response is not Kraken JSON"], method) from None
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

    # --- orders --------------------------------------------------------------------------

    async def add_order(
        self,
        pair: str,
        side: str,
        ordertype: str,
        volume: Decimal,
        price: Decimal | None = None,
        cl_ord_id: str | None = None,
    ) -> str:
        """Place one order; returns its txid. ``pair`` is the domain pair ('XRP/USD'),
        ``price`` the limit price, or the trigger price for stop-loss / take-profit."""
        params = {
            "pair": rest_altname(pair),
            "type": side,
            "ordertype": ordertype,
            "volume": decimal_text(volume),
        }
        if price is not None:
            params["price"] = decimal_text(price)
        if cl_ord_id is not None:
            params["cl_ord_id"] = cl_ord_id
        result = await self.call("AddOrder", params)
        txids = result.get("txid") or []
        if not txids:
            raise KrakenUncertain(["AddOrder returned no txid"], "AddOrder")
        return str(txids[0])

    async def cancel_order(self, *, cl_ord_id: str | None = None, txid: str | None = None) -> int:
        """Cancel one order by client order id or txid; returns how many were cancelled."""
        if (cl_ord_id is None) == (txid is None):
            raise ValueError("give exactly one of cl_ord_id and txid")
        params = {"cl_ord_id": cl_ord_id} if cl_ord_id is not None else {"txid": str(txid)}
        result = await self.call("CancelOrder", params)
        return int(result.get("count", 0))

    async def cancel_all(self) -> int:
        result = await self.call("CancelAll")
        return int(result.get("count", 0))

    async def cancel_all_orders_after(self, timeout_s: int) -> dict[str, Any]:
        """Arm (or with 0 disarm) Kraken's dead man's switch."""
        result: dict[str, Any] = await self.call(
            "CancelAllOrdersAfter", {"timeout": str(timeout_s)}
        )
        return result

    async def open_orders(self, cl_ord_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Open orders keyed by txid (optionally only the one with ``cl_ord_id``)."""
        params = {"cl_ord_id": cl_ord_id} if cl_ord_id is not None else {}
        result = await self.call("OpenOrders", params)
        return dict(result.get("open") or {})

    async def closed_orders(
        self, cl_ord_id: str | None = None, start: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Closed, cancelled and expired orders keyed by txid (the most recent 50)."""
        params: dict[str, str] = {}
        if cl_ord_id is not None:
            params["cl_ord_id"] = cl_ord_id
        if start is not None:
            params["start"] = str(start)
        result = await self.call("ClosedOrders", params)
        return dict(result.get("closed") or {})

    async def query_orders(self, txids: list[str]) -> dict[str, dict[str, Any]]:
        """Orders by txid (at most 50 per call)."""
        if not txids:
            return {}
        result = await self.call("QueryOrders", {"txid": ",".join(txids[:50])})
        return dict(result or {})

    async def trades_history(
        self, start: int | None = None, max_pages: int = 20
    ) -> dict[str, dict[str, Any]]:
        """Own trades keyed by trade txid since ``start`` (unix seconds), all pages (50 each;
        ``max_pages`` bounds the rate-limit cost)."""
        trades: dict[str, dict[str, Any]] = {}
        for _ in range(max_pages):
            params = {"ofs": str(len(trades))}
            if start is not None:
                params["start"] = str(start)
            result = await self.call("TradesHistory", params)
            page = dict(result.get("trades") or {})
            trades.update(page)
            if not page or len(trades) >= int(result.get("count", 0)):
                break
        return trades


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain positional text ('1E+1' -> '10'), the form Kraken parses exactly."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text
