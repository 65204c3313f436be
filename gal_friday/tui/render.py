"""Pure text rendering for the cockpit panels (Rich Text in, no Textual, easy to test).

Styles come in as a mapping from a role ('bid', 'ask', 'ok', 'warn', 'bad', 'muted', ...) to
a Rich style, which the widgets resolve from their Textual CSS component classes, so colours
live in ``styles/cockpit.tcss`` and follow the theme (dark or light).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from rich.style import Style
from rich.text import Text

from gal_friday.domain import to_decimal
from gal_friday.events import BookEvent, PredictionEvent

Styles = Mapping[str, Style]
_EIGHTHS = " ▏▎▍▌▋▊▉█"
_LEVELS = " ▁▂▃▄▅▆▇█"


def fmt_qty(qty: Decimal) -> str:
    """Sizes compactly: 1.23M, 45.6k, 1,234.50, 0.0123."""
    if qty >= 1_000_000:
        return f"{qty / 1_000_000:.2f}M"
    if qty >= 100_000:
        return f"{qty / 1000:.1f}k"
    if qty >= 1000:
        return f"{qty:,.0f}"
    if qty >= 1:
        return f"{qty:,.2f}"
    return f"{qty:.4g}"


def fmt_pct(frac: Decimal | float) -> str:
    return f"{float(frac) * 100:.2f}%"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` with eighth-cell precision."""
    if width <= 0:
        return ""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)


def ladder(
    book: BookEvent | None,
    invalid: str,
    age_s: float | None,
    *,
    rows: int,
    width: int,
    styles: Styles,
) -> Text:
    """Asks above (best nearest the middle), the spread, bids below, then the book status."""
    out = Text(no_wrap=True, overflow="crop")
    if book is None or invalid:
        out.append(
            f"no book: {invalid}" if invalid else "waiting for the book…",
            styles["warn" if invalid else "muted"],
        )
        return out
    levels = max(1, (rows - 2) // 2)
    asks = list(reversed(book.asks[:levels]))
    bids = list(book.bids[:levels])
    biggest = max((q for _, q in asks + bids), default=1) or 1
    for price, qty in asks:
        _level(out, book, price, qty, biggest, width, styles["ask"])
    _spread(out, book, styles)
    for price, qty in bids:
        _level(out, book, price, qty, biggest, width, styles["bid"])
    _book_status(out, book, age_s, styles)
    return out


def _level(
    out: Text, book: BookEvent, price: int, qty: int, biggest: int, width: int, style: Style
) -> None:
    p = format(to_decimal(price, book.price_precision), "f")
    q = fmt_qty(to_decimal(qty, book.qty_precision))
    cells = max(0, width - 22)
    out.append(f"{p:>10} {q:>10} ", style)
    out.append(bar(qty / biggest, cells), style)
    out.append("\n")


def _spread(out: Text, book: BookEvent, styles: Styles) -> None:
    bid, ask, mid = book.best_bid(), book.best_ask(), book.mid()
    if bid is None or ask is None or mid is None:
        out.append("  one-sided book\n", styles["warn"])
        return
    spread = ask - bid
    bps = float(spread / mid) * 10_000 if mid else 0.0
    out.append(f"  spread {spread:f} ({bps:.1f} bps)\n", styles["muted"])


def _book_status(out: Text, book: BookEvent, age_s: float | None, styles: Styles) -> None:
    stale = age_s is not None and age_s > 5
    out.append(f"crc {book.checksum:08x} ✓", styles["ok"])
    out.append(f" seq {book.sequence}", styles["muted"])
    out.append(
        f" age {age_s:.1f}s" if age_s is not None else " age -",
        styles["warn" if stale else "muted"],
    )


def sparkline(values: Sequence[float], *, width: int, height: int) -> list[str]:
    """A block chart of the last ``width`` values, ``height`` rows tall (top row first)."""
    data = list(values)[-width:] if width > 0 else []
    if not data:
        return [""] * height
    low, high = min(data), max(data)
    span = (high - low) or 1.0
    steps = height * 8
    levels = [1 + round((v - low) / span * (steps - 1)) for v in data]
    rows = []
    for r in range(height):
        floor = (height - 1 - r) * 8
        rows.append("".join(_LEVELS[max(0, min(8, lv - floor))] for lv in levels))
    return rows


def price_view(closes: Sequence[Decimal], *, width: int, height: int, styles: Styles) -> Text:
    """Recent 1-min closes: last, change over the window, range, and a block chart."""
    out = Text(no_wrap=True, overflow="crop")
    if not closes:
        out.append("waiting for candles…", styles["muted"])
        return out
    last, first = closes[-1], closes[0]
    change = float((last - first) / first) if first else 0.0
    out.append(f"last {last:f} ", styles["value"])
    out.append(f"{change * 100:+.2f}%", styles["ok" if change >= 0 else "bad"])
    out.append(f"/{len(closes)}m ↓{min(closes):f} ↑{max(closes):f}\n", styles["muted"])
    chart = sparkline([float(c) for c in closes], width=width, height=max(1, height - 1))
    out.append("\n".join(chart), styles["chart"])
    return out


def prediction_view(
    pred: PredictionEvent | None,
    now_ns: int,
    *,
    buy: float,
    sell: float,
    width: int,
    styles: Styles,
) -> Text:
    """Probability against the entry thresholds, model id, age and inference latency."""
    out = Text(no_wrap=True, overflow="crop")
    if pred is None:
        out.append("waiting for the first prediction…", styles["muted"])
        return out
    p = pred.prob_up
    zone = "bid" if p >= buy else "ask" if p <= sell else "value"
    verdict = "BUY zone" if p >= buy else "SELL zone" if p <= sell else "neutral"
    out.append(f"p_up {p:.3f} ", styles[zone])
    out.append(f"{verdict}  sell≤{sell:.2f} buy≥{buy:.2f}\n", styles["muted"])
    out.append_text(_prob_scale(p, buy, sell, max(10, width), styles))
    age = max(0.0, (now_ns - pred.ts_ns) / 1e9)
    out.append(f"\n{pred.model_id}", styles["value"])
    out.append(
        f"  age {age:.0f}s  inference {pred.latency_ns / 1e6:.1f} ms",
        styles["warn" if age > 120 else "muted"],
    )
    return out


def _prob_scale(p: float, buy: float, sell: float, width: int, styles: Styles) -> Text:
    """A 0..1 scale with the sell and buy thresholds marked and the probability as a dot."""
    cells = ["─"] * width

    def at(x: float) -> int:
        return min(width - 1, max(0, round(x * (width - 1))))

    cells[at(sell)] = "┤"
    cells[at(buy)] = "├"
    out = Text()
    dot = at(p)
    for i, ch in enumerate(cells):
        role = "ask" if i <= at(sell) else "bid" if i >= at(buy) else "muted"
        out.append("●" if i == dot else ch, styles["value" if i == dot else role])
    return out


def gauge(label: str, value: float, limit: float, text: str, *, width: int, styles: Styles) -> Text:
    """One risk gauge: label, value against its limit, and a bar coloured by how close."""
    frac = value / limit if limit > 0 else 0.0
    role = "ok" if frac < 0.5 else "warn" if frac < 0.8 else "bad"
    out = Text(no_wrap=True, overflow="crop")
    out.append(f"{label:<10}", styles["muted"])
    out.append(f"{text:>15} ", styles[role])
    out.append(bar(frac, max(0, width - 26)), styles[role])
    return out
