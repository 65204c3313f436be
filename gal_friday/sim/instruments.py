"""The simulator's instrument table: Kraken's facts for each pair it can serve.

One table feeds every face of the simulator (the WebSocket ``instrument`` channel, REST
``AssetPairs``, the synthetic market's tick grid), so later modules (a matching engine, paper
trading) can reuse the same numbers. Values follow Kraken's published pair data: XRP/USD
prices have 5 decimals, DOGE/USD (Kraken's legacy code XDG) 7, quantities 8 for both.

Amounts are kept as decimal text (``"0.00001"``) so they reach the wire exactly; the scaled
integer forms the market model needs are derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gal_friday.domain import InstrumentSpec
from gal_friday.kraken.numbers import to_scaled

# Kraken Pro's spot fee schedule (percent of notional by 30-day USD volume), the same one the
# bot's config assumes (maker 0.25, taker 0.40 at the entry tier).
FEES_TAKER: tuple[tuple[int, float], ...] = (
    (0, 0.40),
    (10000, 0.35),
    (50000, 0.24),
    (100000, 0.22),
    (250000, 0.20),
    (500000, 0.18),
    (1000000, 0.16),
    (2500000, 0.14),
    (5000000, 0.12),
    (10000000, 0.10),
)
FEES_MAKER: tuple[tuple[int, float], ...] = (
    (0, 0.25),
    (10000, 0.20),
    (50000, 0.14),
    (100000, 0.12),
    (250000, 0.10),
    (500000, 0.08),
    (1000000, 0.06),
    (2500000, 0.04),
    (5000000, 0.02),
    (10000000, 0.0),
)


@dataclass(frozen=True, slots=True)
class SimAsset:
    """An ``instrument``-channel asset entry."""

    id: str
    precision: int
    precision_display: int
    status: str = "enabled"
    borrowable: bool = False
    collateral_value: str = "0.0"
    margin_rate: str = "0.0"


@dataclass(frozen=True, slots=True)
class MarketProfile:
    """How the synthetic market behaves for a pair (not Kraken facts, realism knobs)."""

    start_price: str  # where the live market opens (the back-history ends here)
    price_floor: str  # soft bounds of the latent fair value, a realistic range
    price_ceiling: str
    grain_ticks: int  # typical gap between adjacent levels near the touch, in ticks
    typical_qty: str  # median resting order size, base units
    daily_volatility: float  # standard deviation of daily log returns
    trades_per_minute: float  # average print rate in the back-history


@dataclass(frozen=True, slots=True)
class SimInstrument:
    """One pair as Kraken describes it on WebSocket v2 and REST, plus its market profile."""

    symbol: str  # WS v2 symbol, 'XRP/USD'
    base: str  # WS v2 asset codes
    quote: str
    rest_key: str  # REST result key, 'XXRPZUSD'
    altname: str  # REST altname, 'XRPUSD'
    wsname: str  # REST wsname (v1 spelling), 'XRP/USD' / 'XDG/USD'
    rest_base: str  # REST asset codes, 'XXRP' / 'ZUSD'
    rest_quote: str
    price_precision: int
    qty_precision: int
    cost_precision: int
    price_increment: str
    qty_increment: str
    qty_min: str
    cost_min: str
    ordermin: str
    status: str = "online"
    marginable: bool = False
    has_index: bool = True
    profile: MarketProfile | None = field(default=None, compare=False)

    @property
    def tick(self) -> int:
        """The price increment in scaled units (1 unless the pair trades on a coarser grid)."""
        return max(1, to_scaled(self.price_increment, self.price_precision))

    @property
    def qty_min_scaled(self) -> int:
        return to_scaled(self.qty_min, self.qty_precision)

    def price_scaled(self, text: str) -> int:
        return to_scaled(text, self.price_precision)

    def qty_scaled(self, text: str) -> int:
        return to_scaled(text, self.qty_precision)

    @property
    def spec(self) -> InstrumentSpec:
        """The pair's exchange rules as the domain type (what the backtester and paper
        trading size and round orders by), straight from the table, no wire format between."""
        return InstrumentSpec(
            pair=self.symbol,
            price_precision=self.price_precision,
            qty_precision=self.qty_precision,
            price_increment=Decimal(self.price_increment),
            qty_increment=Decimal(self.qty_increment),
            qty_min=Decimal(self.ordermin),
            cost_min=Decimal(self.cost_min),
            status=self.status,
        )

    def names(self) -> tuple[str, ...]:
        """Every spelling REST's ``pair`` parameter accepts for this pair, upper-cased."""
        return tuple(
            n.upper()
            for n in (
                self.rest_key,
                self.altname,
                self.wsname,
                self.symbol,
                self.symbol.replace("/", ""),
            )
        )


XRP_USD = SimInstrument(
    symbol="XRP/USD",
    base="XRP",
    quote="USD",
    rest_key="XXRPZUSD",
    altname="XRPUSD",
    wsname="XRP/USD",
    rest_base="XXRP",
    rest_quote="ZUSD",
    price_precision=5,
    qty_precision=8,
    cost_precision=5,
    price_increment="0.00001",
    qty_increment="0.00000001",
    qty_min="10",
    cost_min="0.5",
    ordermin="10",
    profile=MarketProfile(
        start_price="2.20000",
        price_floor="0.50000",
        price_ceiling="2.50000",
        grain_ticks=8,
        typical_qty="850",
        daily_volatility=0.045,
        trades_per_minute=40.0,
    ),
)

DOGE_USD = SimInstrument(
    symbol="DOGE/USD",
    base="DOGE",
    quote="USD",
    rest_key="XDGUSD",
    altname="XDGUSD",
    wsname="XDG/USD",
    rest_base="XXDG",
    rest_quote="ZUSD",
    price_precision=7,
    qty_precision=8,
    cost_precision=5,
    price_increment="0.0000001",
    qty_increment="0.00000001",
    qty_min="50",
    cost_min="0.5",
    ordermin="50",
    profile=MarketProfile(
        start_price="0.1800000",
        price_floor="0.0600000",
        price_ceiling="0.4000000",
        grain_ticks=60,
        typical_qty="9000",
        daily_volatility=0.055,
        trades_per_minute=25.0,
    ),
)

INSTRUMENTS: dict[str, SimInstrument] = {i.symbol: i for i in (XRP_USD, DOGE_USD)}

ASSETS: dict[str, SimAsset] = {
    a.id: a
    for a in (
        SimAsset("USD", 4, 2, borrowable=True, collateral_value="1.0", margin_rate="0.015"),
        SimAsset("XRP", 8, 5, collateral_value="0.0", margin_rate="0.02"),
        SimAsset("DOGE", 8, 2, collateral_value="0.0", margin_rate="0.02"),
    )
}

_LEGACY_ASSET = {"BTC": "XBT", "DOGE": "XDG"}


def get_instrument(symbol: str) -> SimInstrument:
    """The table entry for a v2 symbol; KeyError names the pair the simulator cannot serve."""
    return INSTRUMENTS[symbol]


def _dec_text(raw: object) -> str:
    """Exact decimal text of a wire number kept as text (or int) by the decoder."""
    return format(Decimal(str(raw)), "f")


def instrument_from_wire(pair: dict[str, Any]) -> SimInstrument:
    """A pair from a recorded ``instrument`` snapshot. Known pairs keep the table's REST
    names; unknown ones get Kraken's modern naming (key = altname = base + quote)."""
    symbol = str(pair["symbol"])
    known = INSTRUMENTS.get(symbol)
    base, quote = str(pair.get("base", symbol.split("/")[0])), str(pair.get("quote", "USD"))
    legacy = _LEGACY_ASSET.get(base, base) + "/" + _LEGACY_ASSET.get(quote, quote)
    altname = legacy.replace("/", "")
    pp, qp = int(pair["price_precision"]), int(pair["qty_precision"])
    increment = pair.get("price_increment", pair.get("tick_size"))
    return SimInstrument(
        symbol=symbol,
        base=base,
        quote=quote,
        rest_key=known.rest_key if known else altname,
        altname=known.altname if known else altname,
        wsname=known.wsname if known else legacy,
        rest_base=known.rest_base if known else base,
        rest_quote=known.rest_quote if known else quote,
        price_precision=pp,
        qty_precision=qp,
        cost_precision=int(pair.get("cost_precision", 5)),
        price_increment=_dec_text(increment) if increment is not None else _pow10_text(pp),
        qty_increment=_dec_text(pair.get("qty_increment", _pow10_text(qp))),
        qty_min=_dec_text(pair.get("qty_min", "0")),
        cost_min=_dec_text(pair.get("cost_min", "0")),
        ordermin=_dec_text(pair.get("qty_min", "0")),
        status=str(pair.get("status", "online")),
        marginable=bool(pair.get("marginable", False)),
        has_index=bool(pair.get("has_index", True)),
        profile=known.profile if known else None,
    )


def _pow10_text(decimals: int) -> str:
    return format(Decimal(1).scaleb(-decimals), "f")
