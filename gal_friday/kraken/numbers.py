"""Exact conversion of Kraken's wire numbers to scaled integers.

Kraken WebSocket v2 sends prices and quantities as JSON numbers "with full precision". The
decoder hands them to us as their raw text (never as floats), and this module turns that text
into an integer count of the pair's smallest unit (``price * 10**price_precision``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

_POW10: tuple[int, ...] = tuple(10**i for i in range(40))
_MAX_TEXT = 40  # longer numbers are hostile or corrupt, never real prices


class WireNumberError(ValueError):
    """A number on the wire is not a valid non-negative amount at the expected precision."""


def to_scaled(raw: object, precision: int) -> int:
    """Scale a wire number (raw text or int) to an integer at ``precision`` decimal places.

    Raises WireNumberError for negatives, non-numbers, or more significant decimals than the
    precision allows (that would silently change the value and break the checksum).
    """
    if type(raw) is int:
        if raw < 0:
            raise WireNumberError(f"negative amount {raw}")
        return raw * _POW10[precision]
    if type(raw) is not str:
        raise WireNumberError(f"not a number: {raw!r}")
    if len(raw) > _MAX_TEXT or raw.startswith("-"):
        raise WireNumberError(f"bad amount {raw[:_MAX_TEXT]!r}")
    whole, dot, frac = raw.partition(".")
    if "e" in raw or "E" in raw or not (whole.isdigit() and (not dot or frac.isdigit())):
        return _scaled_slow(raw, precision)
    extra = len(frac) - precision
    if extra > 0:
        if frac[precision:].strip("0"):
            raise WireNumberError(f"{raw} has more than {precision} decimals")
        frac = frac[:precision]
        extra = 0
    return int(whole + frac) * _POW10[-extra]


def _scaled_slow(raw: str, precision: int) -> int:
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise WireNumberError(f"not a number: {raw!r}") from exc
    if not value.is_finite() or value < 0 or value.adjusted() > 30:
        raise WireNumberError(f"bad amount {raw!r}")
    scaled = value.scaleb(precision)
    if scaled != scaled.to_integral_value():
        raise WireNumberError(f"{raw} has more than {precision} decimals")
    return int(scaled)


def format_scaled(scaled: int, precision: int) -> str:
    """Wire text for a scaled integer at its precision (``100000, 8`` -> ``'0.00100000'``)."""
    if precision == 0:
        return str(scaled)
    digits = str(scaled).rjust(precision + 1, "0")
    return f"{digits[:-precision]}.{digits[-precision:]}"
