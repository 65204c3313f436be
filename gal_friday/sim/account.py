"""The simulated Kraken account: balances, funds held by open orders, ledger and fills.

Kraken refuses an order it cannot fund at placement (``EOrder:Insufficient funds``) and holds
the funds of every open order, so a bot that sizes orders from its total balance instead of
what is available gets refused there too. The account models exactly that, with exact
Decimals everywhere, so a client's balance tracking can be checked to the last unit:

* ``balances`` are totals per plain asset code (``USD``, ``XRP``, ``DOGE``);
* ``holds`` are the amounts reserved per open order (the trading layer decides how much);
  ``available(asset)`` is the total minus every hold on it;
* a fill moves both legs at once (buy: base += qty, quote -= qty * price + fee; sell:
  base -= qty, quote += qty * price - fee; the fee is always quote currency) and writes one
  ledger entry per leg sharing the trade id, as Kraken's ``balances`` channel reports them;
* ``earn`` optionally reports part of an asset under Kraken's ``.F`` name (``XRP.F``) in REST
  ``Balance``: Kraken's auto-earn balances stay tradable but are listed apart, and a client
  that does not add them up undercounts its holdings.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from gal_friday.sim.instruments import ASSETS

ERR_INSUFFICIENT_FUNDS = "EOrder:Insufficient funds"
DEFAULT_BALANCES: Mapping[str, Decimal] = {
    "USD": Decimal(10000),
    "XRP": Decimal(0),
    "DOGE": Decimal(0),
}
_ZERO = Decimal(0)
# Kraken's legacy REST asset codes and the stem of their ``.F`` (earn) names.
_REST_NAMES = {"USD": "ZUSD", "XRP": "XXRP", "DOGE": "XXDG", "BTC": "XXBT", "EUR": "ZEUR"}
_EARN_STEMS = {"DOGE": "XDG", "BTC": "XBT"}
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class InsufficientFunds(Exception):
    """The order cannot be funded from the available balance."""

    def __init__(self) -> None:
        super().__init__(ERR_INSUFFICIENT_FUNDS)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change, in the shape of a ``balances`` channel update."""

    ledger_id: str
    ref_id: str  # the trade id for trade legs (both legs share it)
    ts_ns: int
    type: str  # trade | adjustment
    asset: str
    amount: Decimal  # signed, before the fee
    fee: Decimal  # taken from this leg on top of ``amount``
    balance: Decimal  # the asset's new total


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one order, as ``TradesHistory`` and ``executions`` report it."""

    trade_id: str  # Kraken-style 'TXXXXX-XXXXX-XXXXXX'
    trade_seq: int  # the integer ``trade_id`` of the executions channel
    order_id: str
    cl_ord_id: str | None
    userref: int | None
    symbol: str  # WS v2 symbol
    side: str
    order_type: str
    price: Decimal
    qty: Decimal
    cost: Decimal
    fee: Decimal
    maker: bool
    ts_ns: int


def kraken_id(rng: random.Random, prefix: str) -> str:
    """An id in Kraken's ``OXXXXX-XXXXX-XXXXXX`` style (orders O, trades T, ledger L)."""
    chars = "".join(rng.choice(_ID_ALPHABET) for _ in range(16))
    return f"{prefix}{chars[:5]}-{chars[5:10]}-{chars[10:]}"


def rest_asset_name(asset: str) -> str:
    """Kraken's legacy REST code for a plain asset code (``XRP`` -> ``XXRP``)."""
    return _REST_NAMES.get(asset, asset)


def earn_asset_name(asset: str) -> str:
    """Kraken's ``.F`` name for the auto-earn part of an asset (``XRP`` -> ``XRP.F``)."""
    return _EARN_STEMS.get(asset, asset) + ".F"


def format_amount(value: Decimal, precision: int) -> str:
    """Decimal text at the asset's precision, or exactly when the value has more decimals
    (exact fees can), so no amount is ever rounded on the way out."""
    quantum = Decimal(1).scaleb(-precision)
    if value == value.quantize(quantum):
        return format(value.quantize(quantum), "f")
    return format(value.normalize(), "f")


class SimAccount:
    """Balances, holds, ledger and fills of the one simulated account; see the module doc."""

    def __init__(
        self,
        balances: Mapping[str, Decimal | int | str] | None = None,
        *,
        earn: Mapping[str, Decimal | int | str] | None = None,
        seed: int = 0,
    ) -> None:
        initial = dict(DEFAULT_BALANCES)
        initial.update({a: Decimal(v) for a, v in (balances or {}).items()})
        self.balances: dict[str, Decimal] = initial
        self.earn: dict[str, Decimal] = {a: Decimal(v) for a, v in (earn or {}).items()}
        self.holds: dict[str, tuple[str, Decimal]] = {}  # order id -> (asset, amount)
        self.ledger: list[LedgerEntry] = []
        self.fills: list[Fill] = []
        self._rng = random.Random(f"{seed}:ledger")

    # --- queries ---------------------------------------------------------------------------

    def balance(self, asset: str) -> Decimal:
        return self.balances.get(asset, _ZERO)

    def held(self, asset: str) -> Decimal:
        return sum((amt for a, amt in self.holds.values() if a == asset), _ZERO)

    def available(self, asset: str) -> Decimal:
        """What a new order may use: the total minus every open order's hold."""
        return self.balance(asset) - self.held(asset)

    def earn_part(self, asset: str) -> Decimal:
        """The part of the balance reported under the ``.F`` name (never above the total)."""
        return max(_ZERO, min(self.earn.get(asset, _ZERO), self.balance(asset)))

    def rest_balance(self) -> dict[str, str]:
        """REST ``Balance``: legacy codes, amounts as strings at the asset's precision, the
        earn part apart under its ``.F`` name."""
        out: dict[str, str] = {}
        for asset, total in self.balances.items():
            precision = ASSETS[asset].precision if asset in ASSETS else 8
            earn = self.earn_part(asset)
            out[rest_asset_name(asset)] = format_amount(total - earn, precision)
            if asset in self.earn:
                out[earn_asset_name(asset)] = format_amount(earn, precision)
        return out

    # --- holds -----------------------------------------------------------------------------

    def reserve(self, order_id: str, asset: str, amount: Decimal) -> None:
        """Hold ``amount`` of ``asset`` for an order; refuses what is not available."""
        current = self.holds.get(order_id)
        already = current[1] if current is not None and current[0] == asset else _ZERO
        if amount > self.available(asset) + already:
            raise InsufficientFunds
        self.holds[order_id] = (asset, amount)

    def set_hold(self, order_id: str, asset: str, amount: Decimal) -> None:
        """Shrink (or set) an order's hold without a funds check (after a partial fill)."""
        if amount <= 0:
            self.holds.pop(order_id, None)
        else:
            self.holds[order_id] = (asset, amount)

    def release(self, order_id: str) -> None:
        self.holds.pop(order_id, None)

    # --- changes ---------------------------------------------------------------------------

    def apply_fill(self, fill: Fill, base: str, quote: str) -> list[LedgerEntry]:
        """Move both legs of one fill and record it; returns the two ledger entries."""
        notional = fill.qty * fill.price
        buy = fill.side == "buy"
        base_amount = fill.qty if buy else -fill.qty
        quote_amount = -notional if buy else notional  # gross; the fee is its own field
        self.fills.append(fill)
        return [
            self._post(fill.trade_id, fill.ts_ns, "trade", base, base_amount, _ZERO),
            self._post(fill.trade_id, fill.ts_ns, "trade", quote, quote_amount, fill.fee),
        ]

    def set_balance(self, asset: str, amount: Decimal, ts_ns: int) -> LedgerEntry:
        """Set a total outright (a test fault); recorded as an adjustment."""
        delta = Decimal(amount) - self.balance(asset)
        return self._post(kraken_id(self._rng, "A"), ts_ns, "adjustment", asset, delta, _ZERO)

    def _post(
        self, ref_id: str, ts_ns: int, kind: str, asset: str, amount: Decimal, fee: Decimal
    ) -> LedgerEntry:
        total = self.balance(asset) + amount - fee  # Kraken: balance = prior + amount - fee
        self.balances[asset] = total
        entry = LedgerEntry(
            kraken_id(self._rng, "L"), ref_id, ts_ns, kind, asset, amount, fee, total
        )
        self.ledger.append(entry)
        return entry
