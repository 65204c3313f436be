"""The private WebSocket v2 messages the trading venue reads, as typed msgspec structures
(sans-IO: bytes or text in, structures out, no socket needed to test them).

A frame is decoded in one pass into a ``PrivateFrame`` envelope: its routing fields (``method``
and ``req_id`` for a method response, ``channel`` and ``type`` for a channel message) typed,
its ``result`` and ``data`` kept as raw JSON until the venue knows what they are
(``method_result``, ``executions_message``, ``balances_message``). Numbers are decoded from
their JSON text straight into ``Decimal`` (``0.10000000`` stays ``Decimal('0.10000000')``,
never a float); numbers sent as strings are read the same way. Fields the bot does not read
are ignored, and every field may be absent: ``executions`` updates are sparse, so which are
required is the reader's decision, not the schema's.

A frame that is not JSON, or whose envelope fields have the wrong types, raises
``PrivateMessageError`` (a ``ValueError``) with msgspec's description of what and where; a frame
that is JSON but not an object decodes to None (nothing the venue reads).

The entries of a batched ``executions`` or ``balances`` message are read one by one: an entry
that is not what Kraken documents (wrong types, an unknown side, a trade without its quantity
or price, a number that is not a finite amount) becomes an ``UnreadableEntry`` naming the
problem and the order ids it still carries, and the other entries of the message are read as
usual. One bad entry must never cost the fills beside it.

The request side (``encode_request``, ``json_number``) writes amounts as raw JSON numbers with
exactly their digits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

__all__ = [
    "AddOrderResult",
    "BalanceEntry",
    "BalancesMessage",
    "CancelAllOrdersAfterResult",
    "CancelAllResult",
    "CancelOrderResult",
    "ExecutionEntry",
    "ExecutionsMessage",
    "Fee",
    "PrivateFrame",
    "PrivateMessageError",
    "Triggers",
    "UnreadableEntry",
    "Wallet",
    "balances_message",
    "decode_frame",
    "encode_request",
    "executions_message",
    "json_number",
    "method_result",
]

R = TypeVar("R", bound=msgspec.Struct)


class PrivateMessageError(ValueError):
    """A private WebSocket frame (or part of one) that is not what Kraken documents."""


# --- the envelope ------------------------------------------------------------------------------


class PrivateFrame(msgspec.Struct, kw_only=True, frozen=True):
    """Any private WebSocket v2 frame: a method response (``method``, ``req_id``, ``success``,
    ``result`` or ``error``) or a channel message (``channel``, ``type``, ``data``)."""

    method: str | None = None
    req_id: int | None = None
    success: bool | None = None
    result: msgspec.Raw = msgspec.Raw()  # raw JSON; empty when absent
    error: str | list[str] | None = None  # a string on WS v2 (REST's errors are a list)
    channel: str | None = None
    type: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # raw JSON; empty when absent

    @property
    def is_response(self) -> bool:
        """A response to one of our requests (it names the method and echoes our req_id)."""
        return self.method is not None and self.req_id is not None

    @property
    def error_text(self) -> str:
        """The error as one string, for the error mapping."""
        return str(self.error)


_frame_decoder = msgspec.json.Decoder(PrivateFrame | list[Any] | str | int | float | bool | None)


def decode_frame(raw: str | bytes) -> PrivateFrame | None:
    """One frame; None if it is JSON but not an object. Raises PrivateMessageError."""
    try:
        frame = _frame_decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise PrivateMessageError(f"unreadable private WebSocket frame: {exc}") from None
    return frame if isinstance(frame, PrivateFrame) else None


# --- method results ----------------------------------------------------------------------------


class AddOrderResult(msgspec.Struct, kw_only=True, frozen=True):
    """``add_order``'s result; ``order_id`` is empty for a ``validate`` request."""

    order_id: str | None = None


class CancelOrderResult(msgspec.Struct, kw_only=True, frozen=True):
    """``cancel_order``'s result (one response per order cancelled)."""

    order_id: str | None = None


class CancelAllResult(msgspec.Struct, kw_only=True, frozen=True):
    """``cancel_all``'s result: how many orders were cancelled."""

    count: int = 0


class CancelAllOrdersAfterResult(msgspec.Struct, kw_only=True, frozen=True):
    """``cancel_all_orders_after``'s result: when the dead man's switch fires (RFC3339)."""

    current_time: str | None = msgspec.field(default=None, name="currentTime")
    trigger_time: str | None = msgspec.field(default=None, name="triggerTime")


def method_result(frame: PrivateFrame, kind: type[R]) -> R:
    """A successful response's ``result`` as ``kind``; an absent or null result, or one that
    is not an object, reads as ``kind``'s empty value (every field defaulted). Raises
    PrivateMessageError if the result's fields have the wrong types."""
    if not bytes(frame.result).lstrip().startswith(b"{"):
        return kind()
    try:
        return msgspec.json.decode(frame.result, type=kind)
    except msgspec.DecodeError as exc:
        raise PrivateMessageError(f"unreadable {frame.method} result: {exc}") from None


# --- executions --------------------------------------------------------------------------------


class Fee(msgspec.Struct, kw_only=True, frozen=True):
    asset: str | None = None
    qty: Decimal = Decimal(0)


class Triggers(msgspec.Struct, kw_only=True, frozen=True):
    price: Decimal | None = None


class ExecutionEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One order's line of an ``executions`` message: every field the bot reads (updates
    carry only what changed, so all may be absent)."""

    order_id: str | None = None
    cl_ord_id: str | None = None
    exec_type: str | None = None
    order_status: str | None = None
    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    order_qty: Decimal | None = None
    limit_price: Decimal | None = None
    triggers: Triggers | None = None
    cum_qty: Decimal | None = None
    cum_cost: Decimal | None = None
    avg_price: Decimal | None = None
    exec_id: str | None = None
    trade_id: int | str | None = None
    last_qty: Decimal | None = None
    last_price: Decimal | None = None
    fees: list[Fee] | None = None
    reason: str | None = None
    timestamp: str | None = None


class UnreadableEntry(msgspec.Struct, kw_only=True, frozen=True):
    """An entry of a batched private message that could not be read: what was wrong, and the
    ids it still carries (so the venue can look the order up over REST). Never the entry's
    text: it is the exchange's, and a log line only needs the ids."""

    problem: str
    order_id: str | None = None
    cl_ord_id: str | None = None


class ExecutionsMessage(msgspec.Struct, kw_only=True, frozen=True):
    """An ``executions`` snapshot (the open orders at subscribe time) or update: the entries
    read, and those that could not be."""

    type: str | None = None
    data: list[ExecutionEntry] = msgspec.field(default_factory=list)
    unreadable: list[UnreadableEntry] = msgspec.field(default_factory=list)

    @property
    def snapshot(self) -> bool:
        return self.type == "snapshot"

    @classmethod
    def from_mapping(cls, msg: Mapping[str, Any]) -> ExecutionsMessage:
        """From an already decoded object (numbers as text or numbers); a null ``data`` is
        no entries, as in a frame. Raises PrivateMessageError only if ``data`` is not a list
        (or the type not a string): entries are read one by one."""
        try:
            kind = msgspec.convert(msg.get("type"), type=str | None)
            items = msgspec.convert(msg.get("data"), type=list[Any] | None)
        except msgspec.ValidationError as exc:
            raise PrivateMessageError(f"unreadable executions message: {exc}") from None
        data, unreadable = _read_entries(
            items or [], lambda item: msgspec.convert(item, type=ExecutionEntry), _execution_problem
        )
        return cls(type=kind, data=data, unreadable=unreadable)


def executions_message(frame: PrivateFrame) -> ExecutionsMessage:
    """The ``executions`` message a frame carries, read entry by entry. Raises
    PrivateMessageError only if its ``data`` is not a list."""
    typed = _typed_items(frame, _entry_list)
    if typed is not None:  # the usual case: every entry has the right types
        data, unreadable = _read_entries(typed, _as_is, _execution_problem)
    else:
        data, unreadable = _read_entries(_raw_items(frame), _entry_decoder, _execution_problem)
    return ExecutionsMessage(type=frame.type, data=data, unreadable=unreadable)


_entry_list = msgspec.json.Decoder(list[ExecutionEntry] | None)


_entry_decoder = msgspec.json.Decoder(ExecutionEntry).decode
_SIDES = (None, "buy", "sell")
# Far beyond any amount of XRP or DOGE (or their prices), far below where Decimal arithmetic
# would overflow: a number outside this is a corrupted one, not a trade.
_MAX_AMOUNT = Decimal("1e15")


def _execution_problem(e: ExecutionEntry) -> str | None:
    """What makes a decoded entry unusable (the types are right, the content is not)."""
    if e.side not in _SIDES:
        return f"unknown side {str(e.side)[:20]!r}"
    trigger = e.triggers.price if e.triggers else None
    amounts = [e.order_qty, e.limit_price, e.cum_qty, e.cum_cost, e.avg_price, trigger]
    for value in (*amounts, e.last_qty, e.last_price, *(f.qty for f in e.fees or ())):
        problem = _amount_problem(value, signed=False)
        if problem is not None:
            return problem
    if e.exec_type == "trade":
        if e.last_qty is None or e.last_price is None:
            return "a trade without last_qty or last_price"
        if e.last_qty == 0 or e.last_price == 0:
            return "a trade of nothing or at no price"
    return None


def _amount_problem(value: Decimal | None, *, signed: bool) -> str | None:
    if value is None:
        return None
    if not value.is_finite() or abs(value) >= _MAX_AMOUNT:
        return f"not a finite amount: {str(value)[:30]}"
    if not signed and value < 0:
        return f"a negative amount: {str(value)[:30]}"
    return None


class _Ids(msgspec.Struct):
    """The ids an unreadable entry may still carry (anything else about it ignored)."""

    order_id: Any = None
    cl_ord_id: Any = None


_ids_decoder = msgspec.json.Decoder(_Ids)


def _ids_of(item: object) -> tuple[str | None, str | None]:
    """The order id and client order id of a raw (or decoded) entry, if they are strings."""
    ids: _Ids | None = None
    try:
        if isinstance(item, msgspec.Raw):
            ids = _ids_decoder.decode(item)
        elif isinstance(item, Mapping):
            ids = _Ids(item.get("order_id"), item.get("cl_ord_id"))
        elif isinstance(item, ExecutionEntry):
            ids = _Ids(item.order_id, item.cl_ord_id)
    except msgspec.DecodeError:
        return None, None
    if ids is None:
        return None, None
    oid = ids.order_id if isinstance(ids.order_id, str) and ids.order_id else None
    coid = ids.cl_ord_id if isinstance(ids.cl_ord_id, str) and ids.cl_ord_id else None
    return oid, coid


E = TypeVar("E", bound=msgspec.Struct)


def _read_entries(
    items: list[Any],
    read: Callable[[Any], E],
    problem_of: Callable[[E], str | None],
) -> tuple[list[E], list[UnreadableEntry]]:
    """Each entry on its own: the readable ones, and the others with their problem and ids."""
    data: list[E] = []
    unreadable: list[UnreadableEntry] = []
    for item in items:
        try:
            entry = read(item)
            problem = problem_of(entry)
        except (msgspec.DecodeError, ArithmeticError) as exc:  # ValidationError is one too
            problem = str(exc)
        if problem is None:
            data.append(entry)
        else:
            oid, coid = _ids_of(item)
            unreadable.append(UnreadableEntry(problem=problem[:200], order_id=oid, cl_ord_id=coid))
    return data, unreadable


def _typed_items(
    frame: PrivateFrame, decoder: msgspec.json.Decoder[list[E] | None]
) -> list[E] | None:
    """All of a message's entries decoded in one pass (the fast path), or None if any of
    them (or ``data`` itself) has the wrong types: then they are read one by one."""
    if not bytes(frame.data):
        return []
    try:
        return decoder.decode(frame.data) or []
    except msgspec.DecodeError:
        return None


def _as_is(entry: E) -> E:
    return entry


_raw_list = msgspec.json.Decoder(list[msgspec.Raw] | None)


def _raw_items(frame: PrivateFrame) -> list[msgspec.Raw]:
    """A message's ``data`` entries, each still raw JSON; raises PrivateMessageError if
    ``data`` is not a list (nothing in it can be read, not even an id)."""
    if not bytes(frame.data):
        return []
    try:
        return _raw_list.decode(frame.data) or []
    except msgspec.DecodeError as exc:
        raise PrivateMessageError(f"unreadable {frame.channel} message: {exc}") from None


# --- balances ----------------------------------------------------------------------------------


class Wallet(msgspec.Struct, kw_only=True, frozen=True):
    type: str | None = None
    id: str | None = None
    balance: Decimal = Decimal(0)


class BalanceEntry(msgspec.Struct, kw_only=True, frozen=True):
    """A snapshot line (an asset and its wallets) or an update line (a ledger entry with the
    wallet's new ``balance``)."""

    asset: str | None = ""
    balance: Decimal | None = None
    wallets: list[Wallet] | None = None
    wallet_type: str | None = None
    wallet_id: str | None = None


class BalancesMessage(msgspec.Struct, kw_only=True, frozen=True):
    type: str | None = None
    data: list[BalanceEntry] = msgspec.field(default_factory=list)
    unreadable: list[UnreadableEntry] = msgspec.field(default_factory=list)

    @property
    def snapshot(self) -> bool:
        return self.type == "snapshot"


_balance_decoder = msgspec.json.Decoder(BalanceEntry).decode


def _balance_problem(e: BalanceEntry) -> str | None:
    if not e.asset:
        return "a balance without its asset"
    for value in (e.balance, *(w.balance for w in e.wallets or ())):
        problem = _amount_problem(value, signed=True)
        if problem is not None:
            return problem
    return None


def balances_message(frame: PrivateFrame) -> BalancesMessage:
    """The ``balances`` message a frame carries, read entry by entry. Raises
    PrivateMessageError only if its ``data`` is not a list."""
    typed = _typed_items(frame, _balance_list)
    if typed is not None:
        data, unreadable = _read_entries(typed, _as_is, _balance_problem)
    else:
        data, unreadable = _read_entries(_raw_items(frame), _balance_decoder, _balance_problem)
    return BalancesMessage(type=frame.type, data=data, unreadable=unreadable)


_balance_list = msgspec.json.Decoder(list[BalanceEntry] | None)


# --- requests ----------------------------------------------------------------------------------


def json_number(value: Decimal) -> msgspec.Raw:
    """A Decimal as a raw JSON number with exactly its digits (``Decimal('0.50')`` -> ``0.50``):
    going through float could turn 0.1 into 0.1000000000000000055 or drop a digit."""
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    text = format(value, "f")
    return msgspec.Raw(("0" if text == "-0" else text).encode())


def encode_request(method: str, params: Mapping[str, Any], req_id: int) -> bytes:
    """One WebSocket v2 request frame."""
    return msgspec.json.encode({"method": method, "params": dict(params), "req_id": req_id})
