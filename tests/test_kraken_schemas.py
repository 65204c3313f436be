"""The private WebSocket v2 schemas, sans-IO: frames as Kraken documents them (shapes of the
docs' examples) and as the simulator writes them, decoded into typed structures with exact
numbers; unknown fields ignored, malformed frames a clear PrivateMessageError."""

from __future__ import annotations

import json
from decimal import Decimal as D

import msgspec
import pytest

from gal_friday.kraken.schemas import (
    AddOrderResult,
    CancelAllOrdersAfterResult,
    CancelAllResult,
    CancelOrderResult,
    ExecutionsMessage,
    PrivateFrame,
    PrivateMessageError,
    balances_message,
    decode_frame,
    encode_request,
    executions_message,
    json_number,
    method_result,
)
from gal_friday.sim import wire

# Shapes of the docs' examples (websocket-v2 executions / balances / add_order pages).
PENDING_NEW = (
    '{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5",'
    '"order_userref":3,"symbol":"BTC/USD","order_qty":0.005,"cum_cost":0.0,'
    '"time_in_force":"GTC","exec_type":"pending_new","side":"sell","order_type":"limit",'
    '"limit_price_type":"static","limit_price":26500.0,"stop_price":0.0,'
    '"order_status":"pending_new","fee_usd_equiv":0.0,"fee_ccy_pref":"fciq",'
    '"timestamp":"2023-09-22T10:33:05.709950Z"}],"sequence":8}'
)
SPARSE_NEW = (
    '{"channel":"executions","type":"update","data":[{"timestamp":"2023-09-22T10:33:05.709982Z",'
    '"order_status":"new","exec_type":"new","order_userref":3,'
    '"order_id":"OK4GJX-KSTLS-7DZZO5"}],"sequence":9}'
)
TRADE = (
    '{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5",'
    '"order_userref":3,"exec_id":"TGBB7L-HT5LX-J3BZ4A","exec_type":"trade",'
    '"trade_id":62887576,"symbol":"BTC/USD","side":"sell","last_qty":0.005,'
    '"last_price":26599.9,"liquidity_ind":"t","cost":132.9995,"order_type":"limit",'
    '"timestamp":"2023-09-22T10:33:05.709993Z","order_status":"partially_filled",'
    '"cum_qty":0.005,"cum_cost":132.9995,"avg_price":26599.9,"fee_usd_equiv":0.3458,'
    '"fees":[{"asset":"USD","qty":0.3458}]}],"sequence":10}'
)
BALANCES_SNAPSHOT = (
    '{"channel":"balances","type":"snapshot","sequence":1,"data":['
    '{"asset":"BTC","asset_class":"currency","balance":1.2,'
    '"wallets":[{"type":"spot","id":"main","balance":1.2}]},'
    '{"asset":"MATIC","asset_class":"currency","balance":500,'
    '"wallets":[{"type":"spot","id":"main","balance":300},'
    '{"type":"earn","id":"flex","balance":200}]}]}'
)
BALANCES_UPDATE = (
    '{"channel":"balances","type":"update","sequence":10,"data":[{"ledger_id":"A5KS77",'
    '"ref_id":"AGBB7L","timestamp":"2023-09-22T10:33:05.710082Z","type":"trade",'
    '"asset":"USD","asset_class":"currency","category":"trade","wallet_type":"spot",'
    '"wallet_id":"main","amount":132.9995,"fee":0.3458,"balance":500}]}'
)


def frame(text: str | bytes) -> PrivateFrame:
    decoded = decode_frame(text)
    assert decoded is not None
    return decoded


# --- envelope ----------------------------------------------------------------------------------


def test_method_responses_route_by_method_and_req_id() -> None:
    ok = frame(
        '{"method":"add_order","req_id":123456789,"result":{"order_id":'
        '"AA5JGQ-SBMRC-SCJ7J7","order_userref":100054},"success":true,'
        '"time_in":"2023-09-21T14:15:07.197274Z","time_out":"2023-09-21T14:15:07.205301Z"}'
    )
    assert ok.is_response and ok.success is True and ok.req_id == 123456789
    assert method_result(ok, AddOrderResult).order_id == "AA5JGQ-SBMRC-SCJ7J7"
    err = frame(
        '{"error":"EOrder:Insufficient funds","method":"add_order","req_id":7,"success":false}'
    )
    assert err.is_response and err.success is False
    assert err.error_text == "EOrder:Insufficient funds"
    assert method_result(err, AddOrderResult) == AddOrderResult()  # no result: empty
    # The old behaviour of str(msg.get("error")) holds for absent and REST-style errors.
    assert frame('{"method":"add_order","req_id":1,"success":false}').error_text == "None"
    assert frame('{"method":"x","req_id":1,"error":["EA:b"]}').error_text == "['EA:b']"


def test_the_simulators_responses_decode() -> None:
    ack = frame(
        wire.ack(
            "cancel_all", {"count": 3}, 42, 1_700_000_000_000_000_000, 1_700_000_000_001_000_000
        )
    )
    assert ack.is_response and ack.req_id == 42 and ack.success
    assert method_result(ack, CancelAllResult).count == 3
    refused = frame(wire.error("add_order", "EGeneral:Invalid arguments", 9, 0, 0))
    assert refused.is_response and not refused.success
    assert refused.error_text == "EGeneral:Invalid arguments"
    status = frame(wire.status(13834774380200032777))
    assert status.channel == "status" and not status.is_response
    assert frame(wire.HEARTBEAT).channel == "heartbeat"
    # a subscribe ack without a req_id is not a response to anything we are waiting for
    assert not frame(wire.ack("subscribe", {"channel": "executions"}, None, 0, 0)).is_response


def test_other_method_results() -> None:
    dms = frame(
        '{"method":"cancel_all_orders_after","req_id":1,"success":true,"result":'
        '{"currentTime":"2023-09-21T15:49:29Z","triggerTime":"2023-09-21T15:51:09Z"}}'
    )
    after = method_result(dms, CancelAllOrdersAfterResult)
    assert (after.current_time, after.trigger_time) == (
        "2023-09-21T15:49:29Z",
        "2023-09-21T15:51:09Z",
    )
    cancel = frame(
        '{"method":"cancel_order","req_id":1,"success":true,"result":'
        '{"order_id":"OLUMT4-UTEGU-ZYM7E9"}}'
    )
    assert method_result(cancel, CancelOrderResult).order_id == "OLUMT4-UTEGU-ZYM7E9"
    assert (
        method_result(
            frame('{"method":"cancel_all","req_id":1,"success":true,"result":null}'),
            CancelAllResult,
        ).count
        == 0
    )
    with pytest.raises(PrivateMessageError, match=r"unreadable cancel_all result.*count"):
        method_result(
            frame('{"method":"cancel_all","req_id":1,"success":true,"result":{"count":"many"}}'),
            CancelAllResult,
        )


def test_malformed_frames_raise_a_clear_error_and_non_objects_are_nothing() -> None:
    with pytest.raises(PrivateMessageError, match="unreadable private WebSocket frame"):
        decode_frame(b'{"channel": "executions", ')
    with pytest.raises(PrivateMessageError, match=r"\$\.req_id"):
        decode_frame('{"method":"add_order","req_id":"seven"}')
    assert decode_frame("[1, 2]") is None
    assert decode_frame('"hello"') is None
    assert decode_frame("null") is None
    assert isinstance(PrivateMessageError("x"), ValueError)  # callers catch ValueError


# --- executions --------------------------------------------------------------------------------


def test_executions_keep_every_number_exact() -> None:
    msg = executions_message(frame(TRADE))
    assert not msg.snapshot and len(msg.data) == 1
    e = msg.data[0]
    assert (e.order_id, e.exec_id, e.trade_id) == (
        "OK4GJX-KSTLS-7DZZO5",
        "TGBB7L-HT5LX-J3BZ4A",
        62887576,
    )
    assert (e.exec_type, e.order_status, e.symbol, e.side) == (
        "trade",
        "partially_filled",
        "BTC/USD",
        "sell",
    )
    assert e.last_qty == D("0.005") and str(e.last_price) == "26599.9"
    assert e.cum_cost == D("132.9995") and e.avg_price == D("26599.9")
    assert e.fees is not None and (e.fees[0].asset, e.fees[0].qty) == ("USD", D("0.3458"))
    assert e.timestamp == "2023-09-22T10:33:05.709993Z"
    # digits as written, never through a float
    exact = executions_message(
        frame(
            '{"channel":"executions","type":"update","data":'
            '[{"last_qty":0.10000000,"last_price":"0.52340"}]}'
        )
    )
    assert str(exact.data[0].last_qty) == "0.10000000"
    assert str(exact.data[0].last_price) == "0.52340"


def test_sparse_updates_leave_absent_fields_none() -> None:
    full = executions_message(frame(PENDING_NEW)).data[0]
    assert full.order_qty == D("0.005") and full.limit_price == D("26500.0")
    assert full.order_type == "limit" and full.cl_ord_id is None
    sparse = executions_message(frame(SPARSE_NEW)).data[0]
    assert sparse.order_id == "OK4GJX-KSTLS-7DZZO5" and sparse.exec_type == "new"
    assert sparse.symbol is None and sparse.order_qty is None and sparse.fees is None


def test_snapshot_triggers_and_missing_data() -> None:
    snap = executions_message(
        frame(
            '{"channel":"executions","type":"snapshot","data":[{"order_id":"O1","cl_ord_id":"c1",'
            '"symbol":"XRP/USD","side":"sell","order_type":"stop-loss","order_qty":"30",'
            '"triggers":{"reference":"last","price":0.48,"price_type":"static"},'
            '"cum_qty":0,"order_status":"new"}]}'
        )
    )
    assert snap.snapshot and snap.data[0].triggers is not None
    assert snap.data[0].triggers.price == D("0.48") and snap.data[0].cum_qty == 0
    assert executions_message(frame('{"channel":"executions","type":"update"}')).data == []
    assert executions_message(frame('{"channel":"executions","data":null}')).data == []


def test_unreadable_entries_are_named_and_their_neighbours_read() -> None:
    msg = executions_message(
        frame(
            '{"channel":"executions","type":"update","data":['
            '{"order_id":"O1","last_qty":"lots"},'
            '{"order_id":"O2","exec_type":"new"},'
            '{"order_id":"O3","cl_ord_id":"c3","side":"sideways"},'
            '{"cl_ord_id":"c4","exec_type":"trade","last_qty":null,"last_price":1},'
            '{"order_id":7,"last_price":"NaN"},'
            '{"order_id":"O6","cum_qty":-1},'
            '{"order_id":"O7","exec_type":"trade","last_qty":1e40,"last_price":1},'
            "null]}"
        )
    )
    assert [e.order_id for e in msg.data] == ["O2"]
    ids = [(e.order_id, e.cl_ord_id) for e in msg.unreadable]
    assert ids == [
        ("O1", None),
        ("O3", "c3"),
        (None, "c4"),
        (None, None),
        ("O6", None),
        ("O7", None),
        (None, None),
    ]
    problems = [e.problem for e in msg.unreadable]
    assert "last_qty" in problems[0] and "unknown side 'sideways'" in problems[1]
    assert "without last_qty" in problems[2] and "negative" in problems[4]
    assert "not a finite amount" in problems[5]
    with pytest.raises(PrivateMessageError, match="unreadable executions message"):
        executions_message(frame('{"channel":"executions","data":{"order_id":"O1"}}'))


def test_decoded_objects_read_through_the_same_schema() -> None:
    """An object decoded elsewhere (numbers as text, as the old decoder left them)."""
    obj = msgspec.json.Decoder(float_hook=str).decode(TRADE)
    msg = ExecutionsMessage.from_mapping(obj)
    assert msg == executions_message(frame(TRADE))
    assert ExecutionsMessage.from_mapping({"type": "update"}).data == []
    odd = ExecutionsMessage.from_mapping({"data": [{"order_id": "O1", "order_qty": "x"}, 5]})
    assert odd.data == [] and [e.order_id for e in odd.unreadable] == ["O1", None]
    with pytest.raises(PrivateMessageError):
        ExecutionsMessage.from_mapping({"data": "x"})


# --- balances ----------------------------------------------------------------------------------


def test_balances_snapshot_and_update() -> None:
    snap = balances_message(frame(BALANCES_SNAPSHOT))
    assert snap.snapshot
    wallets = {(e.asset, w.type, w.id): w.balance for e in snap.data for w in e.wallets or []}
    assert wallets == {
        ("BTC", "spot", "main"): D("1.2"),
        ("MATIC", "spot", "main"): D(300),
        ("MATIC", "earn", "flex"): D(200),
    }
    update = balances_message(frame(BALANCES_UPDATE))
    assert not update.snapshot
    e = update.data[0]
    assert (e.asset, e.wallet_type, e.wallet_id, e.balance) == ("USD", "spot", "main", D(500))
    mixed = balances_message(
        frame(
            '{"channel":"balances","type":"update","data":[{"asset":"USD","balance":"much"},'
            '{"asset":"XRP","balance":5,"wallet_type":"spot","wallet_id":"main"},'
            '{"asset":null,"balance":1},{"asset":"DOGE","balance":"Infinity"}]}'
        )
    )
    assert [(e.asset, e.balance) for e in mixed.data] == [("XRP", D(5))]
    assert len(mixed.unreadable) == 3
    with pytest.raises(PrivateMessageError, match="unreadable balances message"):
        balances_message(frame('{"channel":"balances","type":"update","data":7}'))


# --- requests ----------------------------------------------------------------------------------


def test_requests_carry_exact_numbers() -> None:
    text = encode_request(
        "add_order", {"order_qty": json_number(D("12.50")), "limit_price": json_number(D("-0"))}, 3
    ).decode()
    assert '"order_qty":12.50' in text and '"limit_price":0' in text
    assert json.loads(text) == {
        "method": "add_order",
        "params": {"order_qty": 12.5, "limit_price": 0},
        "req_id": 3,
    }
    with pytest.raises(ValueError, match="not a finite amount"):
        json_number(D("Infinity"))
