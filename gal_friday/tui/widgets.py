"""Cockpit widgets: each reads ``CockpitState`` and repaints only when its inputs changed.

The app calls ``tick()`` on every panel from one timer (a few times a second). A panel
compares a cheap key of what it shows with the last one painted and refreshes only on a
difference, so a quiet market costs nothing and a busy one costs one repaint per tick.
Colours come from component classes styled in ``styles/cockpit.tcss``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget
from textual.widgets import DataTable, RichLog

from gal_friday.events import ComponentState
from gal_friday.tui import render
from gal_friday.tui.state import CockpitState

ROLES = ("bid", "ask", "ok", "warn", "bad", "muted", "value", "chart")


def hms(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%H:%M:%S")


class Panel(Widget):
    """A text panel rendered from the state; subclasses give ``key`` and ``build``."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"panel--{role}" for role in ROLES}

    def __init__(
        self, state: CockpitState, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self._painted: object = None

    def key(self) -> object:
        raise NotImplementedError

    def build(self, width: int, height: int) -> Text:
        raise NotImplementedError

    def roles(self) -> dict[str, Style]:
        return {role: self.get_component_rich_style(f"panel--{role}") for role in ROLES}

    def tick(self) -> bool:
        """Refresh if the key changed; says whether it did."""
        key = (self.key(), self.content_size)
        if key == self._painted:
            return False
        self._painted = key
        self.refresh()
        return True

    def render(self) -> RenderResult:
        size = self.content_size
        return self.build(size.width, size.height)


class CockpitHeader(Panel):
    """Mode (LIVE is loud), connection, HALT with its reason, and the (injected) clock."""

    COMPONENT_CLASSES: ClassVar[set[str]] = Panel.COMPONENT_CLASSES | {
        "header--live",
        "header--paper",
        "header--sim",
        "header--halted",
        "header--running",
    }

    def key(self) -> object:
        s = self.state
        return (
            s.mode,
            s.halted,
            s.halt_reason,
            s.reducing,
            s.connection,
            s.clock() // 1_000_000_000,
        )

    def tick(self) -> bool:
        self.set_class(self.state.mode == "LIVE", "-live")
        self.set_class(self.state.halted, "-halted")
        return super().tick()

    def build(self, width: int, height: int) -> Text:
        s = self.state
        r = self.roles()
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(f" {s.mode} ", self.get_component_rich_style(f"header--{s.mode.lower()}"))
        out.append(" gal-friday ", r["value"])
        conn = s.connection
        out.append(f" feed {conn.value} ", r["ok" if conn is ComponentState.CONNECTED else "bad"])
        if s.halted:
            out.append(" HALTED ", self.get_component_rich_style("header--halted"))
            out.append(f" {s.halt_source}: {s.halt_reason} ", r["bad"])
        elif s.reducing:
            out.append(" REDUCING ", self.get_component_rich_style("header--halted"))
            out.append(f" {s.reducing}: exits only ", r["bad"])
        else:
            out.append(" TRADING ", self.get_component_rich_style("header--running"))
        clock = f"{hms(s.clock())} UTC "
        out.append(" " * max(1, width - out.cell_len - len(clock)))
        out.append(clock, r["muted"])
        return out


class BookPanel(Panel):
    """The order-book ladder of one pair: levels with size bars, spread, checksum and age."""

    def __init__(self, state: CockpitState, pair: str) -> None:
        super().__init__(state, classes="book")
        self.pair = pair
        self.border_title = f"{pair} book"

    def key(self) -> object:
        p = self.state.pairs[self.pair]
        return (id(p.book), p.invalid_reason, _age(p.data_age_s))

    def build(self, width: int, height: int) -> Text:
        p = self.state.pairs[self.pair]
        return render.ladder(
            p.book, p.invalid_reason, p.data_age_s, rows=height, width=width, styles=self.roles()
        )


class PricePanel(Panel):
    """Recent 1-min closes of one pair as a block chart."""

    def __init__(self, state: CockpitState, pair: str) -> None:
        super().__init__(state, classes="price")
        self.pair = pair
        self.border_title = f"{pair} 1m closes"

    def key(self) -> object:
        closes = self.state.pairs[self.pair].closes
        return (len(closes), closes[-1]) if closes else None

    def build(self, width: int, height: int) -> Text:
        closes = self.state.pairs[self.pair].closes or ()
        return render.price_view(
            [c for _, c in closes], width=width, height=height, styles=self.roles()
        )


class PredictionPanel(Panel):
    """The latest prediction against the strategy's entry thresholds."""

    def __init__(self, state: CockpitState, pair: str) -> None:
        super().__init__(state, classes="prediction")
        self.pair = pair
        self.border_title = f"{pair} prediction"

    def key(self) -> object:
        return (id(self.state.pairs[self.pair].prediction), self.state.clock() // 1_000_000_000)

    def build(self, width: int, height: int) -> Text:
        s = self.state
        cfg = s.settings.strategy
        return render.prediction_view(
            s.pairs[self.pair].prediction,
            s.clock(),
            buy=cfg.buy_threshold,
            sell=cfg.sell_threshold,
            width=width,
            styles=self.roles(),
        )


class RiskPanel(Panel):
    """Drawdowns, exposure and consecutive losses against their HALT / check limits."""

    def key(self) -> object:
        return id(self.state.portfolio)

    def build(self, width: int, height: int) -> Text:
        s = self.state
        r = self.roles()
        if s.portfolio is None:
            return Text("waiting for the portfolio…", r["muted"])
        snap, lim = s.portfolio.snapshot, s.settings.risk
        exposure = snap.exposure / snap.equity if snap.equity > 0 else Decimal(0)
        rows = [
            ("daily DD", snap.daily_drawdown, lim.max_daily_drawdown_pct),
            ("weekly DD", snap.weekly_drawdown, lim.max_weekly_drawdown_pct),
            ("total DD", snap.total_drawdown, lim.max_total_drawdown_pct),
            ("exposure", exposure, lim.max_total_exposure_pct),
        ]
        out = Text(no_wrap=True, overflow="crop")
        out.append(
            f"equity {snap.equity:,.2f}  cash {snap.cash:,.2f}  "
            f"realised {snap.realised_pnl:+,.2f}\n",
            r["value"],
        )
        for label, value, limit_pct in rows:
            text = f"{render.fmt_pct(value)}/{limit_pct}%"
            out.append_text(
                render.gauge(
                    label, float(value), float(limit_pct) / 100, text, width=width, styles=r
                )
            )
            out.append("\n")
        losses, max_losses = snap.consecutive_losses, lim.max_consecutive_losses
        out.append_text(
            render.gauge(
                "losses", losses, max_losses, f"{losses}/{max_losses}", width=width, styles=r
            )
        )
        return out


class DiffTable(DataTable[str]):
    """A read-only table updated in place: new rows added, changed cells set, gone rows
    removed; never cleared, so nothing flickers and the row order is stable."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, state: CockpitState, *, id: str | None = None) -> None:
        super().__init__(id=id, show_cursor=False, cursor_type="none", zebra_stripes=True)
        self.state = state
        self.can_focus = False
        self._painted: object = None

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def rows_now(self) -> dict[str, tuple[str, ...]]:
        raise NotImplementedError

    def key(self) -> object:
        raise NotImplementedError

    def tick(self) -> bool:
        key = self.key()
        if key == self._painted:
            return False
        self._painted = key
        wanted = self.rows_now()
        for gone in [k for k in self.rows if k.value not in wanted]:
            self.remove_row(gone)
        for row_key, cells in wanted.items():
            if row_key not in self.rows:
                self.add_row(*cells, key=row_key)
                continue
            for (col, _), value in zip(self.COLUMNS, cells, strict=True):
                if self.get_cell(row_key, col) != value:
                    self.update_cell(row_key, col, value)
        return True


class PositionsTable(DiffTable):
    """Open positions with mark, unrealised P&L and their protective orders."""

    COLUMNS = (
        ("pair", "pair"),
        ("qty", "qty"),
        ("avg", "avg"),
        ("mark", "mark"),
        ("upnl", "uP&L"),
        ("sl", "SL"),
        ("tp", "TP"),
    )

    def key(self) -> object:
        return (id(self.state.portfolio), tuple(self.state.orders))

    def rows_now(self) -> dict[str, tuple[str, ...]]:
        s = self.state
        rows: dict[str, tuple[str, ...]] = {}
        for p in s.portfolio.snapshot.positions if s.portfolio else ():
            if not p.qty:
                continue
            sl, tp = s.protective(p.pair)
            rows[p.pair] = (
                p.pair.split("/")[0],
                render.fmt_qty(p.qty),
                f"{p.avg_entry:f}",
                f"{p.mark:f}",
                f"{p.unrealised_pnl:+,.2f}",
                _opt(sl),
                _opt(tp),
            )
        return rows


class OrdersTable(DiffTable):
    """Working orders (entries, stop-losses, take-profits)."""

    COLUMNS = (
        ("pair", "pair"),
        ("side", "side"),
        ("type", "type"),
        ("qty", "filled/qty"),
        ("price", "price"),
        ("status", "status"),
    )

    def key(self) -> object:
        return tuple((k, o.status, o.filled_qty) for k, o in self.state.orders.items())

    def rows_now(self) -> dict[str, tuple[str, ...]]:
        rows: dict[str, tuple[str, ...]] = {}
        for key, o in self.state.orders.items():
            price = o.limit_price or o.trigger_price
            rows[key] = (
                o.pair.split("/")[0],
                o.side.value,
                o.order_type.value,
                f"{render.fmt_qty(o.filled_qty)}/{render.fmt_qty(o.order_qty)}",
                "market" if price is None else f"{price:f}",
                o.status.value,
            )
        return rows


class EventLog(RichLog):
    """The scrolling event log: appends lines newer than the last one written."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        f"log--{level}" for level in ("info", "good", "warn", "bad", "time")
    }

    def __init__(self, state: CockpitState, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=500, wrap=False, markup=False, auto_scroll=True)
        self.state = state
        self.can_focus = False
        self._last_seq = 0

    def tick(self) -> bool:
        if not self.state.log or self.state.log[-1].seq <= self._last_seq:
            return False
        for line in self.state.log:
            if line.seq <= self._last_seq:
                continue
            self._last_seq = line.seq
            text = Text(no_wrap=True, overflow="ellipsis")
            text.append(f"{hms(line.ts_ns)} ", self.get_component_rich_style("log--time"))
            text.append(line.text, self.get_component_rich_style(f"log--{line.level}"))
            self.write(text)
        return True


def _opt(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:f}"


def _age(age: float | None) -> float | None:
    return None if age is None else round(age, 1)
