"""Repeated wrong keys are slowed down (429) per address, without locking out the right key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from squall.controller.auth import FailureThrottle, TooManyFailures
from squall.platform import Platform
from tests.conftest import GUEST_KEY, GUEST_UUID

NAMESPACES = "/api/v1/namespaces"
WRONG = (GUEST_UUID, "x" * 64)


@asynccontextmanager
async def from_address(platform: Platform, host: str, auth: tuple[str, str]) -> AsyncIterator[
    httpx.AsyncClient
]:
    transport = httpx.ASGITransport(app=platform.app, client=(host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://squall", auth=auth) as c:
        yield c


async def test_a_guesser_is_slowed_down_and_the_owner_is_not(platform: Platform) -> None:
    async with from_address(platform, "127.0.0.1", (GUEST_UUID, GUEST_KEY)) as owner:
        assert (await owner.get(NAMESPACES)).status_code == 200
        async with from_address(platform, "127.0.0.1", WRONG) as guesser:
            statuses = [(await guesser.get(NAMESPACES)).status_code for _ in range(30)]
            refused = await guesser.get(NAMESPACES)
        # The owner shares the guesser's address and its identity cache has been dropped (as
        # after a key change): its key, known to be good, still goes through at once.
        platform.auth.forget()
        assert (await owner.get(NAMESPACES)).status_code == 200
    assert statuses[:10] == [401] * 10, statuses
    assert set(statuses[10:]) == {429}, statuses
    assert refused.json()["error"].startswith("Too many failed authentication attempts")
    assert refused.json()["code"]  # the transaction id, as on every error
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    async with from_address(platform, "10.1.2.3", (GUEST_UUID, GUEST_KEY)) as elsewhere:
        assert (await elsewhere.get(NAMESPACES)).status_code == 200
    async with from_address(platform, "10.1.2.4", WRONG) as other_guesser:
        assert (await other_guesser.get(NAMESPACES)).status_code == 401  # its own budget


def test_the_budget_refills_one_attempt_per_second() -> None:
    throttle = FailureThrottle(burst=3, refill_per_s=1.0)
    now = time.monotonic()
    for _ in range(3):
        throttle.check("a", now)
        throttle.failed("a", now)
    with pytest.raises(TooManyFailures) as refused:
        throttle.check("a", now)
    assert refused.value.retry_after_s == pytest.approx(1.0)
    throttle.check("a", now + 1.01)  # one attempt back after a second
    throttle.failed("a", now + 1.01)
    with pytest.raises(TooManyFailures):
        throttle.check("a", now + 1.02)


def test_the_client_table_is_bounded() -> None:
    throttle = FailureThrottle(burst=2, max_clients=100)
    now = time.monotonic()
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", now)
    assert len(throttle._buckets) <= 100
