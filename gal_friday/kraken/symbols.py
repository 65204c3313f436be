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


# Kraken's legacy asset codes (Balance keys, REST results) -> the plain codes the domain uses.
_LEGACY_ASSETS = {
    "XXBT": "BTC",
    "XBT": "BTC",
    "XXDG": "DOGE",
    "XDG": "DOGE",
    "XXRP": "XRP",
    "XETH": "ETH",
    "XLTC": "LTC",
    "XXLM": "XLM",
    "XETC": "ETC",
    "XZEC": "ZEC",
    "XXMR": "XMR",
    "XMLN": "MLN",
    "XREP": "REP",
    "ZUSD": "USD",
    "ZEUR": "EUR",
    "ZGBP": "GBP",
    "ZCAD": "CAD",
    "ZJPY": "JPY",
    "ZAUD": "AUD",
}


def asset_code(kraken_asset: str) -> str:
    """'XXDG' -> 'DOGE', 'ZUSD' -> 'USD', 'XBT' -> 'BTC'; plain codes pass through.

    An explicit table rather than "strip a leading X/Z": newer assets have real names that
    start with X or Z (XTZ, ZEC), which a prefix rule would mangle.
    """
    return _LEGACY_ASSETS.get(kraken_asset, kraken_asset)


def rest_pair_names(pair: str) -> tuple[str, ...]:
    """Every name Kraken's REST may use for a domain pair: altname ('XDGUSD'), legacy pair id
    ('XXRPZUSD'), plain ('XRPUSD') and wsname forms ('XRP/USD', 'XDG/USD')."""
    base, _, quote = pair.partition("/")
    lb, lq = _LEGACY.get(base, base), _LEGACY.get(quote, quote)
    return (rest_altname(pair), f"X{lb}Z{lq}", f"{base}{quote}", pair, f"{lb}/{lq}")


def pair_from_rest(name: str, pairs: tuple[str, ...]) -> str | None:
    """The configured domain pair Kraken's REST ``name`` refers to, or None."""
    for pair in pairs:
        if name in rest_pair_names(pair):
            return pair
    return None
