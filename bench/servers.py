"""Start and stop the servers under test: each its own process group, on a free loopback port,
with a temporary data dir, always stopped (SIGTERM, then SIGKILL for anything left behind)."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.loadgen import REPO_ROOT
from bench.shield import signals_deferred

HOST = "127.0.0.1"
STOP_GRACE_S = 15.0


class ServerStartError(RuntimeError):
    """The server exited or never answered its ping; the message carries its log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def guest_auth() -> str:
    """Fresh `uuid:key` credentials for one benchmark server."""
    return f"{uuid.uuid4()}:{secrets.token_hex(32)}"


@dataclass
class Server:
    """A server process under test."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    auth: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    launched_at: float = 0.0  # time.monotonic() just before the process was started
    launched_wall: float = 0.0  # time.time() at the same instant
    ready_at: float | None = None  # time.monotonic() of the first /ping answered
    stop_s: float | None = None  # how long stop() took
    killed: bool = False  # stop() had to SIGKILL it: it did not exit within STOP_GRACE_S

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def ping(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_ready(self, timeout: float, poll_s: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.ping():
                self.ready_at = time.monotonic()
                return
            time.sleep(poll_s)
        raise ServerStartError(
            f"{self.name} did not answer /ping in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM and wait; then SIGKILL the server and whatever it started that is left.
        Bounded (about 30 s at worst) and not interruptible by Ctrl-C."""
        started = time.monotonic()
        with signals_deferred():
            self._stop()
        self.stop_s = round(time.monotonic() - started, 3)

    def _stop(self) -> None:
        try:
            family = self.process().children(recursive=True)
        except psutil.Error:
            family = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        kill_leftovers(family)
        shutil.rmtree(self.workdir, ignore_errors=True)


def kill_leftovers(processes: list[psutil.Process]) -> None:
    """Kill those of `processes` (identified by pid and start time) still alive."""
    alive = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():
                proc.terminate()
                alive.append(proc)
    _, still = psutil.wait_procs(alive, timeout=3)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(still, timeout=3)


# Servers keep compiled bytecode here, as an installed package has it (pip compiles at install):
# without it, a machine with PYTHONDONTWRITEBYTECODE set (this one) compiles every module on
# every start, about 0.35 s that no deployment pays.
BYTECODE_CACHE = Path(tempfile.gettempdir()) / "squall-bench-bytecode"


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The harness's environment without any SQUALL_* setting, plus `extra`; bytecode is
    cached (see BYTECODE_CACHE)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)
    env.update(extra)
    return env


def launch(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> Server:
    with open(workdir / "server.log", "wb") as log:
        launched_at, launched_wall = time.monotonic(), time.time()
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the harness, which stops us
        )
    return Server(
        name, proc, port, workdir, launched_at=launched_at, launched_wall=launched_wall
    )


@contextlib.contextmanager
def running(server: Server, timeout: float, poll_s: float = 0.05) -> Iterator[Server]:
    try:
        server.wait_ready(timeout, poll_s)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def baseline_server(timeout: float = 30.0) -> Iterator[Server]:
    """The bare hello-world app of bench/baseline_app.py."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="squall-bench-baseline-"))
    argv = [sys.executable, "-m", "bench.baseline_app", "--host", HOST, "--port", str(port)]
    server = launch("baseline", argv, clean_env({}), workdir, port)
    with running(server, timeout) as ready:
        yield ready


@contextlib.contextmanager
def squall_server(
    settings: Mapping[str, str],
    timeout: float = 60.0,
    *,
    data_dir: Path | None = None,
    auth: str | None = None,
    poll_s: float = 0.05,
) -> Iterator[Server]:
    """`squall standalone` with a temporary data dir, fresh guest credentials and `settings`
    (SQUALL_* variables) as its only configuration.

    `data_dir` and `auth` reuse an existing data dir (kept on stop: its owner removes it) and
    guest credentials; `poll_s` is how often /ping is tried while it starts."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="squall-bench-"))
    auth = auth or guest_auth()
    env = clean_env({**settings, "SQUALL_GUEST_AUTH": auth})
    data = data_dir if data_dir is not None else workdir / "data"
    argv = [
        sys.executable, "-m", "squall.cli.main", "standalone",
        "--host", HOST, "--port", str(port), "--data-dir", str(data),
    ]  # fmt: skip
    server = launch("squall", argv, env, workdir, port)
    server.auth, server.env = auth, dict(settings)
    with running(server, timeout, poll_s) as ready:
        yield ready
