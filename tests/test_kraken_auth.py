"""Private-API authentication: API-Sign against Kraken's documented vector, the nonce source
under concurrency and restarts, and the private REST client against the simulator."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gal_friday.config import Credentials
from gal_friday.kraken.auth import NonceSource, sign
from gal_friday.kraken.private import (
    KrakenAuthError,
    KrakenInvalidNonce,
    KrakenPrivateRest,
    classify_private,
)
from gal_friday.kraken.rest import KrakenError, KrakenRateLimited, KrakenUnavailable
from gal_friday.sim.server import SimExchange

# Kraken docs, guides/spot-rest-auth, "Examples" table.
DOC_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
DOC_NONCE = "1616492376594"
DOC_BODY = b"nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
DOC_PATH = "/0/private/AddOrder"
DOC_SIGN = (
    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
)

KEY = "sim-public-key"
SECRET = base64.b64encode(b"gal-friday simulator secret, for tests only").decode()
WRONG_SECRET = base64.b64encode(b"not the secret that belongs to the key").decode()
NO_WS_KEY = "sim-key-without-websocket"


def test_sign_matches_kraken_documented_example() -> None:
    assert sign(DOC_PATH, DOC_NONCE, DOC_BODY, DOC_SECRET) == DOC_SIGN


def test_sign_rejects_non_base64_secret_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        sign(DOC_PATH, DOC_NONCE, DOC_BODY, "not*base64*secret")
    assert "not*base64*secret" not in str(info.value)


# --- nonces ----------------------------------------------------------------------------------


def test_nonce_increases_when_clock_stalls_or_goes_back() -> None:
    ticks = iter([100, 100, 50, 200, 199])
    source = NonceSource(clock=lambda: next(ticks))
    assert [source.next_int() for _ in range(5)] == [100, 101, 102, 200, 201]
    assert int(NonceSource().next()) > 1_600_000_000 * 10**9  # default clock: unix ns


def test_nonce_unique_and_ordered_across_threads_and_tasks() -> None:
    source = NonceSource(clock=lambda: 1_000)  # frozen clock: every value comes from last+1

    def burst(n: int) -> list[int]:
        return [source.next_int() for _ in range(n)]

    async def tasks() -> list[int]:
        async def one() -> int:
            await asyncio.sleep(0)
            return source.next_int()

        return list(await asyncio.gather(*(one() for _ in range(10_000))))

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(burst, 1_250) for _ in range(8)]
        from_tasks = asyncio.run(tasks())  # runs while the threads draw nonces too
        per_thread = [f.result() for f in futures]
    from_threads = [n for got in per_thread for n in got]
    for got in per_thread:
        assert got == sorted(got) and len(set(got)) == len(got)
    assert from_tasks == sorted(from_tasks)  # tasks draw in the order they run
    everything = from_threads + from_tasks
    assert len(everything) == 20_000 == len(set(everything))
    assert sorted(everything) == list(range(1_000, 21_000))
    assert source.last == 20_999


def test_nonce_persisted_mark_survives_restart_with_clock_behind(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nonce"
    first = NonceSource(state, lease_ns=1_000, clock=lambda: 5_000_000)
    issued = [first.next_int() for _ in range(2_500)]  # crosses several leases
    assert int(state.read_text()) > issued[-1]
    assert not [p for p in state.parent.iterdir() if p.name.endswith(".tmp")]
    # "Restart" with a clock that went backwards: still above everything issued.
    second = NonceSource(state, lease_ns=1_000, clock=lambda: 1)
    assert second.next_int() > issued[-1]
    # A fresh file starts from the clock.
    assert NonceSource(tmp_path / "other", clock=lambda: 42).next_int() == 42


def test_nonce_corrupt_state_file_is_an_error(tmp_path: Path) -> None:
    state = tmp_path / "nonce"
    state.write_text("garbage")
    with pytest.raises(ValueError, match="corrupt"):
        NonceSource(state)


# --- error mapping ---------------------------------------------------------------------------


def test_classify_private() -> None:
    assert isinstance(classify_private(["EAPI:Invalid key"], "Balance"), KrakenAuthError)
    assert isinstance(classify_private(["EAPI:Invalid signature"], "Balance"), KrakenAuthError)
    denied = classify_private(["EGeneral:Permission denied"], "Balance")
    assert isinstance(denied, KrakenAuthError) and not denied.retryable
    assert "WebSocket" not in str(denied)
    assert isinstance(classify_private(["EAPI:Invalid nonce"], "Balance"), KrakenInvalidNonce)
    assert isinstance(classify_private(["EAPI:Rate limit exceeded"], "B"), KrakenRateLimited)
    assert isinstance(classify_private(["EService:Unavailable"], "B"), KrakenUnavailable)
    assert type(classify_private(["EGeneral:Invalid arguments"], "B")) is KrakenError


def test_missing_credentials_is_auth_error() -> None:
    with pytest.raises(KrakenAuthError, match="KRAKEN_API_KEY"):
        KrakenPrivateRest("http://127.0.0.1:1", Credentials(), NonceSource())


# --- against the simulator -------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[SimExchange]:
    exchange = SimExchange(seed=3)
    exchange.private.add_key(KEY, SECRET)
    exchange.private.add_key(NO_WS_KEY, SECRET, websocket=False)
    async with exchange:
        yield exchange


def _client(
    sim: SimExchange, key: str = KEY, secret: str = SECRET, nonce: NonceSource | None = None
) -> KrakenPrivateRest:
    creds = Credentials(api_key=key, api_secret=secret)
    return KrakenPrivateRest(sim.rest_url, creds, nonce or NonceSource(), timeout_s=5)


async def test_balance_and_token(sim: SimExchange) -> None:
    async with _client(sim) as client:
        assert await client.balance() == {
            "ZUSD": "10000.0000",
            "XXRP": "0.00000000",
            "XXDG": "0.00000000",
        }
        token = await client.websocket_token()
        assert token in sim.private.tokens
        # concurrent calls on one client: serialised, so no nonce arrives out of order
        results = await asyncio.gather(*(client.balance() for _ in range(20)))
        assert all(r["ZUSD"] == "10000.0000" for r in results)


async def test_wrong_secret_is_auth_error(sim: SimExchange) -> None:
    async with _client(sim, secret=WRONG_SECRET) as client:
        with pytest.raises(KrakenAuthError) as info:
            await client.balance()
    assert info.value.errors == ["EAPI:Invalid signature"]
    assert not info.value.retryable
    assert "KRAKEN_API_SECRET" in str(info.value)


async def test_unknown_key_is_auth_error(sim: SimExchange) -> None:
    async with _client(sim, key="nobody") as client:
        with pytest.raises(KrakenAuthError) as info:
            await client.balance()
    assert info.value.errors == ["EAPI:Invalid key"]


async def test_stale_nonce(sim: SimExchange) -> None:
    async with _client(sim) as client:
        await client.balance()
    async with _client(sim, nonce=NonceSource(clock=lambda: 1_000)) as stale:
        with pytest.raises(KrakenInvalidNonce) as info:
            await stale.balance()
    assert info.value.errors == ["EAPI:Invalid nonce"]
    async with _client(sim) as again:  # a valid nonce still works: the bad one was not kept
        await again.balance()


async def test_token_permission_denied_message(sim: SimExchange) -> None:
    async with _client(sim, key=NO_WS_KEY) as client:
        assert (await client.balance())["ZUSD"] == "10000.0000"
        with pytest.raises(KrakenAuthError) as info:
            await client.websocket_token()
    assert info.value.errors == ["EGeneral:Permission denied"]
    assert '"WebSocket interface" permission' in str(info.value)


async def test_secret_never_in_repr_errors_or_logs(
    sim: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    nonce = NonceSource()
    creds = Credentials(api_key=KEY, api_secret=WRONG_SECRET)
    async with KrakenPrivateRest(sim.rest_url, creds, nonce) as client:
        texts += [
            repr(client),
            str(client),
            repr(creds),
            str(creds),
            repr(nonce),
            repr(sim.private._keys),
        ]
        for call in (client.balance, client.websocket_token):
            with pytest.raises(KrakenError) as info:
                await call()
            texts += [str(info.value), repr(info.value), str(info.value.args)]
    async with _client(sim, key=NO_WS_KEY) as denied:
        with pytest.raises(KrakenAuthError) as info:
            await denied.websocket_token()
        texts += [repr(denied), str(info.value), repr(info.value)]
    with pytest.raises(KrakenError) as down:  # nothing listening: a transport error
        async with _client(sim) as client:
            client.base_url = "http://127.0.0.1:9"
            await client.balance()
    texts += [str(down.value), repr(down.value), caplog.text]
    for secret in (SECRET, WRONG_SECRET):
        assert all(secret not in t for t in texts)
        assert all(secret[:16] not in t for t in texts)
