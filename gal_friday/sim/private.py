"""Kraken's private REST API (``POST /0/private/<Method>``) for the simulator: authentication
and the two calls the bot needs before trading, ``Balance`` and ``GetWebSocketsToken``.

The simulator checks credentials the way Kraken does, so the client's signing, nonce and
error handling are exercised end to end over loopback: an unknown ``API-Key`` is
``EAPI:Invalid key``, a wrong ``API-Sign`` is ``EAPI:Invalid signature``, a nonce not above
the last one accepted for the key is ``EAPI:Invalid nonce``, and ``GetWebSocketsToken`` for a
key without the WebSocket permission is ``EGeneral:Permission denied``. Keys are registered
with ``add_key`` (``SimExchange.private.add_key(...)``); with none registered every private
call is refused as an invalid key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gal_friday.kraken.auth import sign

ERR_INVALID_KEY = "EAPI:Invalid key"
ERR_INVALID_SIGNATURE = "EAPI:Invalid signature"
ERR_INVALID_NONCE = "EAPI:Invalid nonce"
ERR_PERMISSION = "EGeneral:Permission denied"
ERR_METHOD = "EGeneral:Unknown method"
TOKEN_TTL_S = 900
BALANCE = {"ZUSD": "10000.0000", "XXRP": "0.00000000", "XXDG": "0.00000000"}


@dataclass(frozen=True)
class _Key:
    secret_b64: str
    websocket: bool

    def __repr__(self) -> str:  # never show the secret
        return f"_Key(websocket={self.websocket})"


class PrivateRest:
    """Accepted API keys, the last nonce seen per key, and the private methods."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._last_nonce: dict[str, int] = {}
        self.tokens: dict[str, int] = {}  # issued WebSocket token -> expiry (unix ns)

    def add_key(self, api_key: str, secret_b64: str, *, websocket: bool = True) -> None:
        """Accept ``api_key`` signed with ``secret_b64``; ``websocket=False`` models a key
        without the "WebSocket interface" permission."""
        try:
            base64.b64decode(secret_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the API secret is not valid base64") from None
        self._keys[api_key] = _Key(secret_b64, websocket)

    def remove_key(self, api_key: str) -> None:
        self._keys.pop(api_key, None)
        self._last_nonce.pop(api_key, None)

    def call(self, method: str, uri_path: str, headers: Mapping[str, str], body: bytes,
             json_body: bool, now_ns: int) -> tuple[int, Any]:
        """HTTP status and response body for one private request (transport-free)."""
        handler = {"Balance": self._balance,
                   "GetWebSocketsToken": self._websocket_token}.get(method)
        if handler is None:
            return 404, {"error": [ERR_METHOD]}
        api_key = headers.get("API-Key", "")
        key = self._keys.get(api_key)
        if key is None:
            return 200, {"error": [ERR_INVALID_KEY]}
        params = _params(body, json_body)
        if params is None:
            return 200, {"error": ["EGeneral:Invalid arguments"]}
        nonce_text = params.get("nonce", "")
        expected = sign(uri_path, nonce_text, body, key.secret_b64)
        if not hmac.compare_digest(expected.encode(), headers.get("API-Sign", "").encode()):
            return 200, {"error": [ERR_INVALID_SIGNATURE]}
        try:
            nonce = int(nonce_text)
        except ValueError:
            return 200, {"error": [ERR_INVALID_NONCE]}
        if nonce <= self._last_nonce.get(api_key, 0):
            return 200, {"error": [ERR_INVALID_NONCE]}
        self._last_nonce[api_key] = nonce
        return handler(key, now_ns)

    def _balance(self, key: _Key, now_ns: int) -> tuple[int, Any]:
        return 200, {"error": [], "result": dict(BALANCE)}

    def _websocket_token(self, key: _Key, now_ns: int) -> tuple[int, Any]:
        if not key.websocket:
            return 200, {"error": [ERR_PERMISSION]}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now_ns + TOKEN_TTL_S * 1_000_000_000
        return 200, {"error": [], "result": {"token": token, "expires": TOKEN_TTL_S}}

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler for ``POST /0/private/{method}``."""
        body = await request.read()
        status, payload = self.call(request.match_info["method"], request.path,
                                    request.headers, body,
                                    request.content_type == "application/json",
                                    time.time_ns())
        return web.json_response(payload, status=status)


def _params(body: bytes, json_body: bool) -> dict[str, str] | None:
    """The request's parameters from a form or JSON body (values as strings)."""
    try:
        if json_body:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                return None
            return {str(k): str(v) for k, v in data.items()}
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        return None
