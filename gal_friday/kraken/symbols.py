"""Kraken's pair names: v2 WebSocket symbols ('DOGE/USD') versus REST names ('XDGUSD').

WebSocket v2 uses the common asset codes (BTC, DOGE) and so does the domain. REST and the v1
``wsname`` still use Kraken's legacy codes (XBT, XDG) and keys like 'XXRPZUSD'.
"""

from __future__ import annotations

_LEGACY = {"BTC": "XBT", "DOGE": "XDG"}
_COMMON = {v: k for k, v in _LEGACY.items()}


def rest_altname(pair: str) -> str:
    """'DOGE/USD' -> 'XDGUSD', the form Kraken's REST ``pair`` parameter accepts."""
    base, _, quote = pair.partition("/")
    return _LEGACY.get(base, base) + _LEGACY.get(quote, quote)


def pair_from_wsname(wsname: str) -> str:
    """'XDG/USD' (AssetPairs ``wsname``) -> 'DOGE/USD'."""
    base, _, quote = wsname.partition("/")
    return f"{_COMMON.get(base, base)}/{_COMMON.get(quote, quote)}"
