"""The zygote as the platform sees it: the process, its socket, forks, exits and kills.

See zygote.py for the other side of the socket and the messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from squall.errors import SandboxError

log = logging.getLogger("squall.sandbox")

ZYGOTE_PATH = Path(__file__).with_name("zygote.py")
ZYGOTE_START_S = 15.0
KILL_WAIT_S = 5.0  # a uid sweep takes at most 2 s in the zygote
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(slots=True, frozen=True)
class ChildExit:
    """How a sandbox's main process ended; both None when the zygote died and took it along."""

    status: int | None
    signal: int | None

    def describe(self) -> str:
        if self.signal is not None:
            return f"crashed: killed by signal {self.signal}"
        if self.status is not None:
            return f"crashed: exit status {self.status}"
        return "crashed: the sandbox supervisor died"


Forked = tuple[int, "asyncio.Future[ChildExit]"]


# ---------------------------------------------------------------------------------------------
# The zygote
# ---------------------------------------------------------------------------------------------


class Zygote:
    """The zygote process and the SOCK_SEQPACKET socket to it (see zygote.py for messages)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                # -S: actions see the stdlib only, never the platform's site-packages.
                [sys.executable, "-I", "-S", str(ZYGOTE_PATH), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=_zygote_env(),
                close_fds=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Out of the terminal's reach: Ctrl-C is for the platform, which then closes
                # the zygote's socket to shut it down cleanly.
                start_new_session=True,
            )
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._sock.setblocking(False)
        self.alive = True
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[None] = loop.create_future()
        self._forks: dict[int, asyncio.Future[Forked]] = {}
        self._exits: dict[int, asyncio.Future[ChildExit]] = {}
        self._kills: dict[int, asyncio.Future[bool]] = {}
        loop.add_reader(self._sock.fileno(), self._readable)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        async with asyncio.timeout(ZYGOTE_START_S):
            await self._ready

    async def fork(self, request: dict[str, Any], fds: list[int]) -> Forked:
        """The new child's pid, and a future resolved when it dies."""
        if not self.alive:
            raise SandboxError("the sandbox zygote is not running")
        request["id"] = request_id = next(self._ids)
        future: asyncio.Future[Forked] = self._loop.create_future()
        self._forks[request_id] = future
        try:
            socket.send_fds(self._sock, [orjson.dumps(request)], fds)
            async with asyncio.timeout(ZYGOTE_START_S):
                return await future
        except (OSError, TimeoutError) as exc:
            raise SandboxError(f"the sandbox zygote did not fork: {exc!r}") from exc
        finally:
            self._forks.pop(request_id, None)

    def request_kill(self, pid: int) -> asyncio.Future[bool]:
        """Ask for the sandbox's processes to be killed; True once nothing of it is left."""
        future = self._kills.get(pid)
        if future is not None:
            return future  # one sweep answers every request for the same sandbox
        future = self._loop.create_future()
        if not self.alive:
            future.set_result(False)
            return future
        self._kills[pid] = future
        self._send({"op": "kill", "pid": pid})
        return future

    async def kill(self, pid: int) -> bool:
        future = self.request_kill(pid)
        done, _pending = await asyncio.wait((future,), timeout=KILL_WAIT_S)
        return bool(done and future.result())

    async def close(self) -> None:
        """Close the socket (the zygote then kills every sandbox and exits) and reap it."""
        self._lost()
        self._sock.close()
        for _ in range(500):
            if self.process.poll() is not None:
                return
            await asyncio.sleep(0.01)
        self.process.kill()
        self.process.wait()

    # -- messages -------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.send(orjson.dumps(message))
        except OSError:
            self._lost()

    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._dispatch(orjson.loads(data))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            exited = self._exits.pop(message["exited"], None)
            _resolve(exited, ChildExit(message.get("status"), message.get("signal")))
        elif "killed" in message:
            _resolve(self._kills.pop(message["killed"], None), bool(message.get("ok")))
        elif "forked" in message:
            self._forked(message["forked"], message.get("id"))
        elif "error" in message:
            future = self._forks.pop(message.get("id") or 0, None)
            if future is not None and not future.done():
                future.set_exception(SandboxError(f"sandbox fork failed: {message['error']}"))
        elif "ready" in message:
            _resolve(self._ready, None)

    def _forked(self, pid: int, request_id: int | None) -> None:
        exited: asyncio.Future[ChildExit] = self._loop.create_future()
        self._exits[pid] = exited
        future = self._forks.pop(request_id or 0, None)
        if future is None or future.done():
            self.request_kill(pid)  # its creator gave up waiting: do not leave it running
            return
        future.set_result((pid, exited))

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._loop.remove_reader(self._sock.fileno())
        # Sandbox children die with the zygote (PR_SET_PDEATHSIG).
        for exited in self._exits.values():
            _resolve(exited, ChildExit(None, None))
        for killed in self._kills.values():
            _resolve(killed, False)
        for fork in self._forks.values():
            if not fork.done():
                fork.set_exception(SandboxError("the sandbox zygote died"))
        if not self._ready.done():
            self._ready.set_exception(SandboxError("the sandbox zygote exited during start"))
        self._exits.clear()
        self._kills.clear()
        self._forks.clear()


def _resolve(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _zygote_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": "C.UTF-8", "HOME": "/nonexistent"}
