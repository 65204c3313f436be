"""Kraken's error strings -> the venue's error classes (sans-IO): the class says what the
caller may safely do next, the message is one line and never holds a secret."""

from __future__ import annotations

import base64

import pytest

from gal_friday.execution.venue import (
    OrderRejected,
    VenueAuthError,
    VenueBusy,
    VenueUncertain,
)
from gal_friday.kraken.errors import UNKNOWN_ORDER, from_kraken_error, venue_error
from gal_friday.kraken.private import (
    KrakenAuthError,
    KrakenInvalidNonce,
    KrakenUncertain,
    classify_private,
)
from gal_friday.kraken.rest import KrakenError, KrakenRateLimited, KrakenUnavailable

SECRET = base64.b64encode(b"fake kraken secret for tests only").decode()

REJECTED = [
    "EOrder:Insufficient funds",
    "EOrder:Order minimum not met",
    "EOrder:Cost minimum not met",
    "EOrder:Tick size check failed",
    "EOrder:Invalid price",
    "EGeneral:Invalid arguments",
    "EGeneral:Invalid arguments:Index unavailable",
    "EOrder:Orders limit exceeded",
]
BUSY = [
    "EOrder:Rate limit exceeded",
    "EOrder:Domain rate limit exceeded",
    "EAPI:Rate limit exceeded",
    "EGeneral:Too many requests",
    "EService:Unavailable",
    "EService:Busy",
    "EService:Market in cancel_only mode",
    "EGeneral:Temporary lockout",
]
AUTH = [
    "EAPI:Invalid key",
    "EAPI:Invalid signature",
    "EGeneral:Permission denied",
    "EAPI:Invalid token",
]


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        *[(e, OrderRejected) for e in REJECTED],
        *[(e, VenueBusy) for e in BUSY],
        *[(e, VenueAuthError) for e in AUTH],
    ],
)
def test_error_mapping_table(error: str, cls: type[Exception]) -> None:
    exc = venue_error(error, "add_order", changes_orders=True)
    assert type(exc) is cls
    assert "\n" not in str(exc) and SECRET not in str(exc)


def test_throttled_retry_after_and_nonce_rules() -> None:
    busy = venue_error("EService:Throttled: 1000", "add_order", changes_orders=True, now_s=990.0)
    assert isinstance(busy, VenueBusy) and busy.retry_after_s == 10.0
    assert isinstance(
        venue_error("EAPI:Invalid nonce", "AddOrder", changes_orders=True), VenueUncertain
    )
    assert isinstance(
        venue_error("EAPI:Invalid nonce", "OpenOrders", changes_orders=False), VenueBusy
    )
    assert isinstance(
        venue_error("EGeneral:Internal error", "add_order", changes_orders=True), VenueUncertain
    )


def test_permission_messages_name_the_permission() -> None:
    token = from_kraken_error(
        classify_private(["EGeneral:Permission denied"], "GetWebSocketsToken")
    )
    assert isinstance(token, VenueAuthError)
    assert 'lacks the "WebSocket interface" permission' in str(token)
    add = venue_error("EGeneral:Permission denied", "add_order", changes_orders=True)
    assert "Create & modify orders" in str(add)


def test_rest_errors_to_venue_errors() -> None:
    assert isinstance(from_kraken_error(KrakenUncertain(["timeout"], "AddOrder")), VenueUncertain)
    assert isinstance(
        from_kraken_error(KrakenUnavailable(["ClientConnectorError: x"], "AddOrder")), VenueBusy
    )
    assert isinstance(
        from_kraken_error(KrakenAuthError(["EAPI:Invalid key"], "Balance", "m")), VenueAuthError
    )
    assert isinstance(
        from_kraken_error(KrakenInvalidNonce(["EAPI:Invalid nonce"], "AddOrder")), VenueUncertain
    )


@pytest.mark.parametrize("method", ["add_order", "AddOrder", "cancel_order", "CancelOrder"])
def test_ws_and_rest_method_names_map_alike(method: str) -> None:
    for error in REJECTED:
        assert type(venue_error(error, method, changes_orders=True)) is OrderRejected
    for error in BUSY:
        assert type(venue_error(error, method, changes_orders=True)) is VenueBusy
    exc = venue_error("EOrder:Insufficient funds", method, changes_orders=True)
    assert str(exc) == f"Kraken {method}: EOrder:Insufficient funds"


def test_unknown_errors_depend_on_whether_the_request_changes_orders() -> None:
    # an order request Kraken refused for a reason we do not know: nothing changed
    assert type(venue_error("EFoo:Bar", "add_order", changes_orders=True)) is OrderRejected
    # a read: try again later
    assert type(venue_error("EFoo:Bar", "OpenOrders", changes_orders=False)) is VenueBusy
    assert type(venue_error("EOrder:Whatever", "OpenOrders", changes_orders=False)) is OrderRejected
    assert (
        type(venue_error("Unsupported field: 'x'", "subscribe", changes_orders=False))
        is OrderRejected
    )
    assert (
        type(venue_error("EGeneral:Internal error", "OpenOrders", changes_orders=False))
        is VenueBusy
    )
    assert (
        type(venue_error("EAPI:Invalid nonce", "add_order", changes_orders=True)) is VenueUncertain
    )
    assert type(venue_error("EAPI:Invalid nonce", "CancelOrder", changes_orders=True)) is VenueBusy


def test_unknown_order_is_a_rejection_the_venue_can_recognise() -> None:
    exc = venue_error(UNKNOWN_ORDER, "cancel_order", changes_orders=True)
    assert isinstance(exc, OrderRejected) and UNKNOWN_ORDER in exc.reason


def test_throttled_without_a_readable_time_has_no_retry_hint() -> None:
    bare = venue_error("EService:Throttled", "add_order", changes_orders=True)
    assert isinstance(bare, VenueBusy) and bare.retry_after_s is None
    past = venue_error("EService:Throttled: 100", "add_order", changes_orders=True, now_s=200.0)
    assert isinstance(past, VenueBusy) and past.retry_after_s == 0.0
    rate = venue_error("EAPI:Rate limit exceeded", "add_order", changes_orders=True)
    assert isinstance(rate, VenueBusy) and rate.retry_after_s is None


def test_token_errors_say_what_to_check() -> None:
    exc = venue_error("ESession:Invalid session", "subscribe", changes_orders=False)
    assert isinstance(exc, VenueBusy)  # not a token error by its words: a session hiccup
    token = venue_error("EAuth:Invalid token", "add_order", changes_orders=True)
    assert isinstance(token, VenueAuthError) and '"WebSocket interface"' in str(token)
    key = venue_error("EAPI:Invalid key", "AddOrder", changes_orders=True)
    assert "KRAKEN_API_KEY" in str(key) and "\n" not in str(key)


def test_rest_client_errors_take_the_first_kraken_error() -> None:
    assert (
        type(from_kraken_error(KrakenError(["EOrder:Insufficient funds", "EFoo"], "AddOrder")))
        is OrderRejected
    )
    assert (
        type(from_kraken_error(KrakenRateLimited(["EAPI:Rate limit exceeded"], "OpenOrders")))
        is VenueBusy
    )
    assert (
        type(from_kraken_error(KrakenUnavailable(["EGeneral:Internal error"], "AddOrder")))
        is VenueUncertain
    )
    assert type(from_kraken_error(KrakenUnavailable(["HTTP 502"], "AddOrder"))) is VenueBusy
    assert type(from_kraken_error(KrakenError([], "Balance"))) is VenueBusy
