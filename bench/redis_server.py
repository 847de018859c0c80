"""A throwaway Redis for the Celery comparison: Debian's `redis-server` on 127.0.0.1, a free
port and a temporary dir, no persistence, stopped by PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.servers import HOST, free_port
from bench.shield import signals_deferred

BINARY = "redis-server"


class RedisStartError(RuntimeError):
    """redis-server exited or never answered PING; the message carries its log's tail."""


def redis_binary() -> str | None:
    return shutil.which(BINARY)


def redis_version() -> str | None:
    """`7.0.15` from `redis-server --version`, None when it is not installed."""
    binary = redis_binary()
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for word in done.stdout.split():
        if word.startswith("v="):
            return word.removeprefix("v=")
    return done.stdout.strip() or None


@dataclass
class RedisServer:
    """One running redis-server."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        raise RedisStartError(f"redis-server did not answer PING in {timeout:.0f} s")

    def stop(self) -> None:
        with signals_deferred():
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(timeout: float = 15.0) -> Iterator[RedisServer]:
    """redis-server with nothing saved to disk (no RDB snapshots, no AOF): the broker and the
    result backend of one benchmark run, gone with it."""
    binary = redis_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="squall-bench-redis-"))
    argv = [
        binary,
        "--bind",
        HOST,
        "--port",
        str(port),
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        str(workdir / "redis.log"),
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = RedisServer(proc, port, workdir)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
