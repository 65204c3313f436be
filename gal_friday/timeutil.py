"""RFC3339 UTC timestamps ('2023-10-06T17:35:55.440295Z') to epoch nanoseconds.

Market data arrives by the thousand per second with timestamps that share the same second,
so the whole-second part is cached and only the fraction is parsed each time.
"""

from __future__ import annotations

from datetime import datetime

_SECOND_CACHE: dict[str, int] = {}
_CACHE_LIMIT = 4096


def parse_ts_ns(text: str) -> int:
    """Epoch nanoseconds for a UTC RFC3339 timestamp with 0 to 9 fractional digits."""
    head = text[:19]
    base = _SECOND_CACHE.get(head)
    if base is None:
        base = int(datetime.fromisoformat(head + "+00:00").timestamp()) * 1_000_000_000
        if len(_SECOND_CACHE) >= _CACHE_LIMIT:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = base
    rest = text[19:]
    if rest.startswith("."):
        digits = rest[1:].rstrip("Z")
        if not digits.isdigit():
            raise ValueError(f"bad timestamp {text!r}")
        return base + int(digits[:9].ljust(9, "0"))
    if rest not in ("Z", "", "+00:00"):
        raise ValueError(f"bad timestamp {text!r}")
    return base
