"""The etcd coordinator against real etcd: keys, elections, snapshot watches, leases that die
with their process, re-registration after a revoked lease or an outage, and failover when the
leader of a 3-node cluster is killed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import httpx
import pytest

from squall.config import EtcdSettings
from squall.coordination.etcd import EtcdCoordinator
from squall.errors import ConfigurationError, DependencyUnavailable
from squall.testing import LocalEtcd, LocalEtcdCluster
from tests.conftest import etcd_binary

TTL_S = 2.0  # etcd's minimum is 1.5 s with default election timeouts; short keeps tests fast


class Snapshots:
    """What a watcher was given, with a bounded wait for a snapshot that satisfies a test."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, snapshot: Mapping[str, str]) -> None:
        self.seen.append(dict(snapshot))
        self._changed.set()

    async def wait_for(
        self, wanted: Callable[[dict[str, str]], bool], timeout_s: float = 5.0
    ) -> dict[str, str]:
        async with asyncio.timeout(timeout_s):
            while True:
                if self.seen and wanted(self.seen[-1]):
                    return self.seen[-1]
                self._changed.clear()
                await self._changed.wait()


def settings(endpoints: tuple[str, ...], prefix: str, **more: object) -> EtcdSettings:
    return EtcdSettings(endpoints=endpoints, prefix=prefix, lease_ttl_s=TTL_S, **more)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def coordinator(etcd: EtcdSettings) -> AsyncIterator[EtcdCoordinator]:
    coord = EtcdCoordinator(etcd)
    await coord.start()
    try:
        yield coord
    finally:
        await coord.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[object]]:
    """Exceptions that escaped a task (the loop's handler sees them): must stay empty."""
    errors: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


async def eventually(check: Callable[[], object], timeout_s: float, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s"
        await asyncio.sleep(every_s)


async def test_keys_prefixes_and_delete(etcd_server: LocalEtcd, prefix: str) -> None:
    async with coordinator(settings((etcd_server.endpoint,), prefix)) as coord:
        assert coord.problem() is None and coord.lease_valid
        await coord.put("members/scheduler0", '{"id": "scheduler0"}')
        await coord.put("members/invoker0", "i0", leased=False)
        await coord.put("other", "x")
        assert await coord.get("members/scheduler0") == '{"id": "scheduler0"}'
        assert await coord.get("missing") is None
        assert await coord.get_prefix("members/") == {
            "members/scheduler0": '{"id": "scheduler0"}',
            "members/invoker0": "i0",
        }
        await coord.delete("members/scheduler0")
        assert await coord.get_prefix("members/") == {"members/invoker0": "i0"}
        # The prefix is really prepended in etcd (another prefix sees nothing).
    async with coordinator(settings((etcd_server.endpoint,), prefix + "x")) as other:
        assert await other.get_prefix("") == {}


async def test_put_if_absent_has_exactly_one_winner(etcd_server: LocalEtcd, prefix: str) -> None:
    etcd = settings((etcd_server.endpoint,), prefix)
    async with coordinator(etcd) as a, coordinator(etcd) as b:
        for round_ in range(5):
            key = f"owner/queue{round_}"
            won = await asyncio.gather(a.put_if_absent(key, "a"), b.put_if_absent(key, "b"))
            assert sorted(won) == [False, True]
            winner = "a" if won[0] else "b"
            assert await a.get(key) == winner
        assert await a.put_if_absent("owner/queue0", "again") is False


async def test_watch_sees_another_members_puts_and_deletes(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    etcd = settings((etcd_server.endpoint,), prefix)
    async with coordinator(etcd) as writer, coordinator(etcd) as reader:
        await writer.put("members/invoker0", "before")
        seen = Snapshots()
        watch = reader.watch_prefix("members/", seen)
        await seen.wait_for(lambda s: s == {"members/invoker0": "before"})
        await writer.put("members/invoker1", "one")
        both = {"members/invoker0": "before", "members/invoker1": "one"}
        await seen.wait_for(lambda s: s == both)
        await writer.delete("members/invoker0")
        await seen.wait_for(lambda s: s == {"members/invoker1": "one"})
        await writer.put("elsewhere", "not watched")
        await writer.close()  # revoking the lease removes its keys at once
        await seen.wait_for(lambda s: s == {})
        await watch.close()
        count = len(seen.seen)
        await reader.put("members/late", "x")
        await asyncio.sleep(0.3)
        assert len(seen.seen) == count, "a closed watch still delivered"


MEMBER = """
import asyncio, sys
from squall.config import EtcdSettings
from squall.coordination.etcd import EtcdCoordinator

async def main():
    endpoint, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    coord = EtcdCoordinator(EtcdSettings(endpoints=(endpoint,), prefix=prefix, lease_ttl_s=ttl))
    await coord.start()
    await coord.put("members/invoker9", "alive")
    print("registered", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_killed_member_key_vanishes_within_ttl(etcd_server: LocalEtcd, prefix: str) -> None:
    argv = [sys.executable, "-c", MEMBER, etcd_server.endpoint, prefix, str(TTL_S)]
    member = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE,
                                                  stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert member.stdout is not None
        line = await asyncio.wait_for(member.stdout.readline(), 30)
        assert line.strip() == b"registered"
        async with coordinator(settings((etcd_server.endpoint,), prefix)) as watcher:
            seen = Snapshots()
            watch = watcher.watch_prefix("members/", seen)
            await seen.wait_for(lambda s: s == {"members/invoker9": "alive"})
            member.kill()
            killed = time.monotonic()
            await seen.wait_for(lambda s: s == {}, timeout_s=TTL_S + 1)
            gone_after = time.monotonic() - killed
            await watch.close()
        assert gone_after <= TTL_S + 1
    finally:
        if member.returncode is None:
            member.kill()
        await asyncio.wait_for(member.wait(), 10)


async def revoke(endpoint: str, lease: int) -> None:
    """Revoke a lease behind its holder's back, as an operator or another client could."""
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"http://{endpoint}/v3/lease/revoke", json={"ID": str(lease)})
        reply.raise_for_status()


async def test_revoked_lease_is_replaced_and_keys_re_registered(
    etcd_server: LocalEtcd, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    etcd = settings((etcd_server.endpoint,), prefix)
    async with coordinator(etcd) as member, coordinator(etcd) as observer:
        await member.put("members/scheduler0", "s0")
        await member.put("throttling/guest/hello", "true")
        await member.put("config", "unleased", leased=False)
        await member.put("members/gone", "x")
        await member.delete("members/gone")  # deleted keys are forgotten, not re-registered
        seen = Snapshots()
        watch = observer.watch_prefix("", seen)
        first = member.lease_id
        assert first is not None
        with caplog.at_level(logging.INFO, logger="squall.coordination.etcd"):
            await revoke(etcd_server.endpoint, first)
            await seen.wait_for(lambda s: s == {"config": "unleased"})
            back = await seen.wait_for(lambda s: len(s) == 3, timeout_s=TTL_S + 2)
        assert back == {"members/scheduler0": "s0", "throttling/guest/hello": "true",
                        "config": "unleased"}  # fmt: skip
        assert member.lease_id not in (None, first) and member.lease_valid
        lost = [r for r in caplog.records if "expired or was revoked" in r.getMessage()]
        assert len(lost) == 1
        await watch.close()


async def test_a_won_key_taken_by_another_member_is_not_taken_back(
    etcd_server: LocalEtcd, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    etcd = settings((etcd_server.endpoint,), prefix)
    caplog.set_level(logging.INFO, logger="squall.coordination.etcd")
    async with coordinator(etcd) as a, coordinator(etcd) as b:
        for attempt in range(3):  # b must claim before a's keeper notices: retried if not
            key = f"owner/shard{attempt}"
            assert await a.put_if_absent(key, "a")
            await a.put("members/a", "alive")
            lease = a.lease_id
            assert lease is not None
            await revoke(etcd_server.endpoint, lease)
            if await b.put_if_absent(key, "b"):
                break
        else:
            pytest.fail("a re-registered before b could claim, three times")
        gave_up = lambda: any(f"{key} is held by another member" in r.getMessage()  # noqa: E731
                              for r in caplog.records)  # fmt: skip
        await eventually(gave_up, TTL_S + 2)
        assert a.lease_id not in (None, lease) and a.lease_valid
        assert await b.get("members/a") == "alive"  # its plain leased key is back
        assert await b.get(key) == "b"  # but the won key stays with its new owner
        assert await a.put_if_absent(key, "a") is False


async def test_etcd_outage_and_recovery_without_restart(
    prefix: str, loop_errors: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    server = LocalEtcd(etcd_binary())
    server.start()
    try:
        etcd = settings((server.endpoint,), prefix)
        async with coordinator(etcd) as coord:
            await coord.put("members/controller0", "c0")
            seen = Snapshots()
            watch = coord.watch_prefix("members/", seen)
            await seen.wait_for(lambda s: s == {"members/controller0": "c0"})

            server.stop()
            stopped = time.monotonic()
            # The last acknowledged keepalive was sent before the stop: invalid within the TTL
            # (plus a little for this poll and a busy machine).
            unusable = lambda: coord.problem() is not None and not coord.lease_valid  # noqa: E731
            await eventually(unusable, TTL_S + 0.5)
            assert time.monotonic() - stopped <= TTL_S + 0.5
            problem = coord.problem() or ""
            assert f"etcd at {server.endpoint} unreachable" in problem and "fix:" in problem
            for call in (coord.get("x"), coord.put("members/x", "1"), coord.get_prefix("")):
                started = time.monotonic()
                with pytest.raises(DependencyUnavailable):
                    await call
                assert time.monotonic() - started < 2.5
            await asyncio.sleep(TTL_S)  # the lease's TTL passes with etcd away
            deliveries = len(seen.seen)

            server.start()  # same data directory and ports
            await eventually(lambda: coord.problem() is None and coord.lease_valid, 10)
            await seen.wait_for(lambda s: s == {"members/controller0": "c0",
                                                "members/x": "1"})  # fmt: skip
            assert len(seen.seen) > deliveries, "no fresh snapshot after etcd came back"
            assert await coord.get("members/controller0") == "c0"
            await watch.close()
        assert loop_errors == []
        reasons = [r for r in caplog.records if r.getMessage().startswith("etcd: etcd at")]
        assert 1 <= len(reasons) <= 2, "the reason should be logged once per change"
    finally:
        server.remove()


async def test_password_stays_out_of_problem_logs_and_errors(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = LocalEtcd(etcd_binary(ctl=True))
    server.start()
    try:
        server.enable_auth("root-secret-pw")
        wrong = settings((server.endpoint,), prefix, username="root", password="wrong-secret-pw")
        with caplog.at_level(logging.DEBUG):
            async with coordinator(wrong) as coord:
                problem = coord.problem() or ""
                assert "refused user 'root'" in problem and "SQUALL_ETCD_PASSWORD" in problem
                with pytest.raises(DependencyUnavailable) as refused:
                    await coord.get("x")
            right = settings((server.endpoint,), prefix, username="root", password="root-secret-pw")
            async with coordinator(right) as coord:
                assert coord.problem() is None
                await coord.put("members/a", "1")
                assert await coord.get_prefix("members/") == {"members/a": "1"}
            server.stop()  # a down etcd with credentials set: the reason names no password
            async with coordinator(right) as coord:
                problem_down = coord.problem() or ""
        assert "unreachable" in problem_down
        for text in (problem, str(refused.value), problem_down, caplog.text):
            assert "wrong-secret-pw" not in text and "root-secret-pw" not in text
    finally:
        server.remove()


async def test_start_never_raises_for_a_down_etcd_only_for_impossible_settings(
    prefix: str,
) -> None:
    from squall.testing import free_port

    async with coordinator(settings((f"127.0.0.1:{free_port()}",), prefix)) as coord:
        assert "unreachable" in (coord.problem() or "") and not coord.lease_valid
    with pytest.raises(ConfigurationError):
        await EtcdCoordinator(settings((), prefix)).start()


async def test_an_endpoint_that_is_not_etcd_is_reported_not_crashed_on(prefix: str) -> None:
    """A proxy in front of a dead etcd answers with an HTML error page."""

    async def bad_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        body = b"<html><body>502 Bad Gateway</body></html>"
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(bad_gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with coordinator(settings((f"127.0.0.1:{port}",), prefix)) as coord:
            assert "502 Bad Gateway" in (coord.problem() or "")
            with pytest.raises(DependencyUnavailable, match="unreachable"):
                await coord.get("x")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("in_use", ["leader", "follower"])
async def test_cluster_survives_the_leader_being_killed(
    etcd_cluster: LocalEtcdCluster, prefix: str, in_use: str
) -> None:
    leader = etcd_cluster.leader()
    # The endpoint in use is the leader that dies, or a follower that loses its leader.
    others = [e for e in etcd_cluster.endpoints if e != leader.endpoint]
    endpoints = (leader.endpoint, *others) if in_use == "leader" else (*others, leader.endpoint)
    try:
        async with coordinator(settings(endpoints, prefix)) as coord:
            await coord.put("members/scheduler0", "s0")
            seen = Snapshots()
            watch = coord.watch_prefix("", seen)
            await seen.wait_for(lambda s: s == {"members/scheduler0": "s0"})
            leader.kill()
            killed = time.monotonic()
            written = False
            while not written:
                assert time.monotonic() - killed < 8, "no write succeeded after the leader died"
                try:
                    await coord.put("after", "written", leased=False)
                    written = True
                except DependencyUnavailable:
                    await asyncio.sleep(0.1)
            await eventually(lambda: coord.lease_valid, TTL_S + 3)
            assert await coord.get("members/scheduler0") == "s0"
            assert await coord.get("after") == "written"
            await seen.wait_for(lambda s: s.get("after") == "written")
            await watch.close()
    finally:
        leader.launch()  # the session's cluster is whole again for later tests
        leader._wait_healthy(30)
