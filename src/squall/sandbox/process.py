"""Process sandboxes for Python actions.

A zygote process (zygote.py, stdlib only) holds a warm interpreter and forks one child per
sandbox. Each child gets its own session, resource limits and, when the platform runs as root,
its own unprivileged uid; it then runs launcher.py's loop. The platform talks to a sandbox over
a Unix stream socket (one JSON line per request and reply) and reads its stdout and stderr
pipes all the time, so an action's output can never block it.

Everything here runs on the event loop with no threads on the hot path: a run is one write,
one future and one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import fcntl
import heapq
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from squall.abc import (
    InitPayload,
    RunPayload,
    Sandbox,
    SandboxFactory,
    SandboxOutcome,
    SandboxSpec,
)
from squall.errors import SandboxError

log = logging.getLogger(__name__)

KINDS = ("python:3", "python:3.11", "python:default")
ZYGOTE_PATH = Path(__file__).with_name("zygote.py")
SENTINEL_LINE = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"
SENTINEL = SENTINEL_LINE[:-1]
RESULT_PREFIX = b'{"result":'
TRUNCATED_NOTE = "Logs were truncated because the total bytes size exceeds the limit of {} bytes."
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

SENTINEL_GRACE_S = 0.05  # how long logs may trail the reply before the call ends without them
EXIT_WAIT_S = 1.0  # how long a dead child's exit status may take to arrive
KILL_WAIT_S = 5.0  # a uid sweep takes at most 2 s in the zygote
ZYGOTE_START_S = 15.0
NPROC_LIMIT = 64
NOFILE_LIMIT = 256
MAX_UID_SLOTS = 100_000

# Why a call stopped waiting.
_REPLY, _TIMEOUT, _DEAD = 0, 1, 2

P = TypeVar("P", bound=asyncio.BaseProtocol)


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


_Forked = tuple[int, "asyncio.Future[ChildExit]"]


# ---------------------------------------------------------------------------------------------
# The zygote
# ---------------------------------------------------------------------------------------------


class _Zygote:
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
        self._forks: dict[int, asyncio.Future[_Forked]] = {}
        self._exits: dict[int, asyncio.Future[ChildExit]] = {}
        self._kills: dict[int, asyncio.Future[bool]] = {}
        loop.add_reader(self._sock.fileno(), self._readable)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        async with asyncio.timeout(ZYGOTE_START_S):
            await self._ready

    async def fork(self, request: dict[str, Any], fds: list[int]) -> _Forked:
        """The new child's pid, and a future resolved when it dies."""
        if not self.alive:
            raise SandboxError("the sandbox zygote is not running")
        request["id"] = request_id = next(self._ids)
        future: asyncio.Future[_Forked] = self._loop.create_future()
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


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


_second_cache: list[Any] = [-1, ""]  # the last whole second and its formatted text


def _timestamp() -> str:
    """UTC with microseconds and Z, as OpenWhisk logs show; strftime only once per second."""
    now = time.time()
    second = int(now)
    if second != _second_cache[0]:
        moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
        _second_cache[:] = [second, moment.strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


class _Logs:
    """One activation's log lines, in arrival order, up to the byte limit."""

    __slots__ = ("limit", "lines", "remaining", "truncated")

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self.remaining = limit
        self.truncated = False

    def add(self, stream: str, raw: bytes, stamp: str) -> None:
        if self.truncated:
            return
        if len(raw) > self.remaining:
            self.truncate(stamp)
            return
        self.remaining -= len(raw)
        self.lines.append(f"{stamp} {stream}: {raw.decode('utf-8', 'replace')}")

    def truncate(self, stamp: str) -> None:
        if not self.truncated:
            self.truncated = True
            self.lines.append(f"{stamp} stderr: {TRUNCATED_NOTE.format(self.limit)}")


class _LogStream(asyncio.Protocol):
    """Reads one of a sandbox's output pipes, always, and counts the activation sentinels."""

    def __init__(self, sandbox: ProcessSandbox, name: str) -> None:
        self._sandbox = sandbox
        self.name = name
        self.sentinels = 0
        self.eof = False
        self.fd = -1  # the pipe's read end, once connected
        self._buf = b""  # the current line's start; never holds a newline

    def data_received(self, data: bytes) -> None:
        logs = self._sandbox.current_logs
        found = self._scan(data) if logs.truncated else self._split(data, logs)
        if found:
            self._sandbox.streams_progressed()

    def eof_received(self) -> bool | None:
        self._finish()
        return None

    def read_now(self) -> None:
        """Read what the pipe holds without waiting for the loop's turn.

        The launcher writes its sentinels before its reply, so once the reply is here they
        are in the pipe: reading them at once saves a loop iteration per call.
        """
        if self.eof or self.fd < 0:
            return
        try:
            data = os.read(self.fd, 262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the transport reports the error on its next read
        if data:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def flush_partial(self, logs: _Logs) -> None:
        """A last line without its newline still belongs to the logs."""
        if self._buf and not logs.truncated:
            logs.add(self.name, self._buf, _timestamp())
        self._buf = b""

    def _finish(self) -> None:
        if not self.eof:
            self.eof = True
            self.flush_partial(self._sandbox.current_logs)
            self._sandbox.streams_progressed()

    def _split(self, data: bytes, logs: _Logs) -> bool:
        buf = self._buf + data if self._buf else data
        if b"\n" not in data:
            self._buf = buf
            if len(buf) > logs.remaining:
                self._overflow(logs)  # this line alone exceeds what is left
            return False
        *lines, rest = buf.split(b"\n")
        found = False
        stamp = ""  # one stamp per read, made on the first line: lines read together share it
        for line in lines:
            if line.endswith(SENTINEL):
                self.sentinels += 1
                found = True
                line = line[: -len(SENTINEL)]  # text printed without a newline before it
                if not line:
                    continue
            stamp = stamp or _timestamp()
            logs.add(self.name, line, stamp)
        self._buf = rest
        if len(rest) > logs.remaining:
            self._overflow(logs)
        return found

    def _overflow(self, logs: _Logs) -> None:
        logs.truncate(_timestamp())
        self._buf = self._buf[-(len(SENTINEL_LINE) - 1) :]

    def _scan(self, data: bytes) -> bool:
        """Past the limit: only look for sentinels, keeping no more than a sentinel's length."""
        buf = self._buf + data
        count = buf.count(SENTINEL_LINE)
        if count:
            self.sentinels += count
            buf = buf[buf.rfind(SENTINEL_LINE) + len(SENTINEL_LINE) :]
        self._buf = buf[-(len(SENTINEL_LINE) - 1) :]
        return count > 0


class _Control(asyncio.Protocol):
    """The sandbox's control socket: reply lines go to the sandbox."""

    def __init__(self, sandbox: ProcessSandbox) -> None:
        self._sandbox = sandbox
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        if not self._buf and data.find(b"\n") == len(data) - 1:
            self._sandbox.replied(data[:-1])  # the usual case: one whole reply in one read
            return
        start = len(self._buf)
        self._buf += data
        end = self._buf.find(b"\n", start)
        while end >= 0:
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._sandbox.replied(line)
            end = self._buf.find(b"\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self._sandbox.control_lost()


def _same(protocol: P) -> Callable[[], P]:
    return lambda: protocol


# ---------------------------------------------------------------------------------------------
# One sandbox
# ---------------------------------------------------------------------------------------------


class ProcessSandbox(Sandbox):
    """One forked child running launcher.py. Attributes `pid`, `uid` (None when not isolated)
    and `work_dir` are for tests and diagnostics."""

    def __init__(
        self,
        factory: ProcessSandboxFactory,
        zygote: _Zygote,
        sandbox_id: str,
        spec: SandboxSpec,
        forked: _Forked,
        slot: int | None,
        work_dir: Path,
    ) -> None:
        self._factory = factory
        self._zygote = zygote
        self._id = sandbox_id
        self.spec = spec
        self.pid, self._exit = forked
        self.slot = slot
        self.uid = factory.uid_base + slot if slot is not None else None
        self.work_dir = work_dir
        self._loop = asyncio.get_running_loop()
        self._exit.add_done_callback(self._exited)
        self._oom_kills = oom_kill_count()
        self.current_logs = _Logs(spec.log_limit_bytes)
        self._out = _LogStream(self, "stdout")
        self._err = _LogStream(self, "stderr")
        self._control: asyncio.Transport | None = None
        self._control_closed = False
        self._transports: list[asyncio.BaseTransport] = []
        self._expected = 0  # sentinels each stream owes: one per request sent
        self._waiter: asyncio.Future[int] | None = None
        self._reply: bytes | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._settle: asyncio.Future[None] | None = None
        self._dead: str | None = None  # the failure every further call reports
        self._killed = False  # by us: a SIGKILL then is not the OOM killer's
        self._kill_request: asyncio.Future[bool] | None = None
        self._destroyed = False

    @property
    def sandbox_id(self) -> str:
        return self._id

    async def connect(self, control: socket.socket, out_fd: int, err_fd: int) -> None:
        """Attach the control socket and both pipes to the loop; takes ownership of all three."""
        fds = [out_fd, err_fd]
        try:
            transport, _ = await self._loop.create_unix_connection(
                _same(_Control(self)), sock=control
            )
            self._control = transport
            self._transports.append(transport)
            for stream in (self._out, self._err):
                stream.fd = fds[0]
                pipe = os.fdopen(fds.pop(0), "rb", buffering=0)
                try:
                    reader, _ = await self._loop.connect_read_pipe(_same(stream), pipe)
                except BaseException:
                    pipe.close()
                    raise
                self._transports.append(reader)
        except BaseException:
            if self._control is None:
                control.close()
            for fd in fds:
                os.close(fd)
            raise

    async def init(self, payload: InitPayload, timeout_s: float) -> SandboxOutcome:
        env = {k: v for k, v in payload.env.items() if not k.startswith("SQUALL_")}
        init: dict[str, Any] = {
            "name": payload.name,
            "main": payload.main,
            "code": payload.code,
            "binary": payload.binary,
            "env": env,
        }
        if payload.memory_mb is not None and payload.memory_mb < self.spec.memory_mb:
            init["memory_mb"] = payload.memory_mb  # the child lowers its own limit
            self.spec = dataclasses.replace(self.spec, memory_mb=payload.memory_mb)
        if payload.log_limit_bytes is not None:
            self.spec = dataclasses.replace(self.spec, log_limit_bytes=payload.log_limit_bytes)
            self.current_logs = _Logs(payload.log_limit_bytes)
        return await self._call(_encode({"init": init}), timeout_s, initializing=True)

    async def run(self, payload: RunPayload, timeout_s: float) -> SandboxOutcome:
        message = {"run": {"value": payload.value, "context": payload.context}}
        return await self._call(_encode(message), timeout_s, initializing=False)

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        self._dead = self._dead or "crashed: the sandbox was destroyed"
        self._wake(_DEAD)
        swept = False
        try:
            swept = await self._kill()
        finally:
            self._out.fd = self._err.fd = -1  # closing the transports closes them
            for transport in self._transports:
                transport.close()
            await self._factory.release(self, swept=swept)

    def memory_bytes(self) -> int:
        if self._exit.done():
            return 0
        try:
            with open(f"/proc/{self.pid}/smaps_rollup", "rb") as rollup:
                total = 0
                for line in rollup:
                    if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
                return total
        except (OSError, ValueError):
            return 0

    # -- one call -----------------------------------------------------------------------------

    async def _call(
        self, message: bytes, timeout_s: float, *, initializing: bool
    ) -> SandboxOutcome:
        if self._dead is not None:
            return SandboxOutcome(None, [], failure=self._dead, fatal=True)
        if self._waiter is not None or self._control is None:
            raise SandboxError(f"sandbox {self._id} is busy or not connected")
        if self._exit.done() or self._control_closed:  # it died (or hung up) while idle
            return await self._stopped(None)
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._waiter = waiter
        self._reply = None
        self._expected += 1
        self._control.write(message)
        timer = self._loop.call_later(max(timeout_s, 0.0), self._wake, _TIMEOUT)
        try:
            reason = await waiter
        except asyncio.CancelledError:
            # The child is mid-request and its state unknown: it must not serve again.
            self._dead = "crashed: the call was cancelled"
            self._request_kill()
            raise
        finally:
            timer.cancel()
            if self._grace is not None:
                self._grace.cancel()
                self._grace = None
            self._waiter = None
        if reason == _REPLY:
            return self._outcome(initializing)
        if reason == _TIMEOUT:
            return await self._stopped("timeout", timed_out=True)
        return await self._stopped(None)

    def _outcome(self, initializing: bool) -> SandboxOutcome:
        reply = self._reply or b"{}"
        self._reply = None
        logs = self._take_logs(final=False)
        if reply.startswith(RESULT_PREFIX):
            raw = reply[len(RESULT_PREFIX) : -1]
            return SandboxOutcome(None if raw == b"null" else raw, logs)
        try:
            data = orjson.loads(reply)
        except orjson.JSONDecodeError:
            data = {"error": "the sandbox sent a malformed reply"}
        if data.get("ok") is True:
            return SandboxOutcome(None, logs)
        if data.get("failure") is not None:
            self._dead = str(data["failure"])
            self._request_kill()  # free its memory now; destroy waits for the same request
            return SandboxOutcome(None, logs, failure=self._dead, fatal=True)
        error = str(data.get("error") or "the sandbox sent an empty reply")
        if initializing:
            self._dead = error
        return SandboxOutcome(None, logs, failure=error, fatal=initializing)

    async def _stopped(self, failure: str | None, *, timed_out: bool = False) -> SandboxOutcome:
        """The call ended without a reply: kill what is left and collect the last logs."""
        if failure is None:
            if not self._exit.done():
                await asyncio.wait((self._exit,), timeout=EXIT_WAIT_S)
            failure = self._death_reason()
        self._dead = self._dead or failure
        await self._kill()
        await self._settle_streams()
        return SandboxOutcome(
            None, self._take_logs(final=True), failure=failure, fatal=True, timed_out=timed_out
        )

    def _death_reason(self) -> str:
        if self._destroyed:
            return self._dead or "crashed: the sandbox was destroyed"
        if not self._exit.done():
            return "crashed: the control channel closed"
        exit_ = self._exit.result()
        # The kernel's OOM killer is the usual sender of a SIGKILL nobody here sent.
        if (
            exit_.signal == signal.SIGKILL
            and not self._killed
            and oom_kill_count() > self._oom_kills
        ):
            return "memory"
        return exit_.describe()

    def _request_kill(self) -> asyncio.Future[bool]:
        """One kill request per sandbox, so every waiter sees the same sweep result."""
        if self._kill_request is None:
            self._killed = True
            self._kill_request = self._zygote.request_kill(self.pid)
        return self._kill_request

    async def _kill(self) -> bool:
        """Kill every process of this sandbox; True once none is known to be left."""
        request = self._request_kill()
        done, _pending = await asyncio.wait((request,), timeout=KILL_WAIT_S)
        swept = bool(done) and request.result()
        if not swept and not self._zygote.alive and self.uid is not None:
            # The zygote died, and its children with it (PDEATHSIG), but their forks may not.
            swept = await asyncio.to_thread(sweep_uid, self.uid)
        if not self._exit.done():
            await asyncio.wait((self._exit,), timeout=EXIT_WAIT_S)
        return swept

    async def _settle_streams(self) -> None:
        if self._settled():
            return
        settle: asyncio.Future[None] = self._loop.create_future()
        self._settle = settle
        try:
            await asyncio.wait((settle,), timeout=SENTINEL_GRACE_S)
        finally:
            self._settle = None

    def _take_logs(self, *, final: bool) -> list[str]:
        logs = self.current_logs
        if final:
            self._out.flush_partial(logs)
            self._err.flush_partial(logs)
        self.current_logs = _Logs(self.spec.log_limit_bytes)
        return logs.lines

    # -- events from the protocols -------------------------------------------------------------

    def _settled(self) -> bool:
        """Both streams delivered every sentinel owed so far, or were closed."""
        out, err, expected = self._out, self._err, self._expected
        return (out.eof or out.sentinels >= expected) and (err.eof or err.sentinels >= expected)

    def _wake(self, reason: int) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(reason)

    def replied(self, line: bytes) -> None:
        if self._waiter is None or self._reply is not None:
            return  # nothing is waiting for it: stray output on fd 3
        self._reply = line
        if not self._settled():
            self._out.read_now()
            self._err.read_now()
        if self._settled():
            self._wake(_REPLY)
        else:
            self._grace = self._loop.call_later(SENTINEL_GRACE_S, self._wake, _REPLY)

    def streams_progressed(self) -> None:
        if not self._settled():
            return
        if self._reply is not None:
            self._wake(_REPLY)
        if self._settle is not None and not self._settle.done():
            self._settle.set_result(None)

    def control_lost(self) -> None:
        self._control_closed = True
        self._wake(_DEAD)

    def _exited(self, _future: asyncio.Future[ChildExit]) -> None:
        self._wake(_DEAD)


def _encode(message: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # e.g. integers beyond 64 bits, which the stdlib encoder handles
        return json.dumps(message).encode() + b"\n"


def oom_kill_count() -> int:
    """How many processes the kernel's OOM killer has killed since boot (0 if unknown)."""
    try:
        with open("/proc/vmstat", "rb") as vmstat:
            for line in vmstat:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def sweep_uid(uid: int) -> bool:
    """Without the zygote: SIGKILL every process of `uid` (ours alone, see _UidPool).

    Repeated because a fork bomb keeps forking while we scan; True when nothing is left.
    """
    for _round in range(20):
        found = _processes_of_uid(uid)
        if not found:
            return True
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return not _processes_of_uid(uid)


def _processes_of_uid(uid: int) -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and _real_uid(name) == uid]


def _real_uid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Sandbox uids
# ---------------------------------------------------------------------------------------------


class _UidPool:
    """Dedicated uids, exclusive host-wide: a slot is ours while we hold a lock on its file.

    Other Squall instances (or test runs) on the same host use the same uid range; without the
    locks one instance's uid sweep would kill another's sandboxes. A slot stays locked while in
    our free list, so recycling it needs no check; a new one is used only if no process runs
    under its uid.
    """

    def __init__(self, base: int) -> None:
        self.base = base
        self._dir: Path | None = None
        self._locks: dict[int, int] = {}  # slot -> the locked file's descriptor
        self._free: list[int] = []
        self._next = 0

    def open(self) -> None:
        self._dir = _lock_dir()

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        while self._next < MAX_UID_SLOTS:
            slot = self._next
            self._next += 1
            if self._lock(slot):
                return slot
        raise SandboxError(f"no free sandbox uid in {self.base}..{self.base + MAX_UID_SLOTS}")

    def give_back(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    def close(self) -> None:
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        self._free.clear()
        self._next = 0

    def _lock(self, slot: int) -> bool:
        if self._dir is None:
            self.open()
        assert self._dir is not None
        uid = self.base + slot
        fd = os.open(self._dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # another instance holds it
        if _processes_of_uid(uid):
            os.close(fd)
            log.warning("uid %d has processes nobody owns; skipping it", uid)
            return False
        self._locks[slot] = fd
        return True


def _lock_dir() -> Path:
    """A root-only directory shared by every Squall instance on this host."""
    base = Path("/run") if Path("/run").is_dir() else Path(tempfile.gettempdir())
    path = base / "squall-sandbox-uids"
    path.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise SandboxError(f"{path} must be a directory owned by root and writable only by it")
    return path


# ---------------------------------------------------------------------------------------------
# The factory
# ---------------------------------------------------------------------------------------------


class ProcessSandboxFactory(SandboxFactory):
    """Creates process sandboxes for Python actions.

    `isolation_degraded` is True (with `isolation_reason`) when not running as root: sandboxes
    then run as the platform's own user, without a uid of their own or a process-count limit.
    `work_root` is where sandboxes' private work dirs live (it may be replaced at start by a
    fallback when sandbox users could not reach it).
    """

    def __init__(self, work_root: Path, *, run_as_root_uid_base: int = 200000) -> None:
        self.work_root = Path(work_root)
        self.uid_base = run_as_root_uid_base
        self.isolated = os.geteuid() == 0
        self.isolation_degraded = not self.isolated
        self.isolation_reason: str | None = None
        if not self.isolated:
            self.isolation_reason = (
                f"not running as root (uid {os.geteuid()}): sandboxes run as the platform's own "
                "user, so they can read its files and signal its processes, and fork bombs are "
                "not contained; run as root for a dedicated uid per sandbox"
            )
        self._zygote: _Zygote | None = None
        self._zygote_lock = asyncio.Lock()
        self._sandboxes: dict[str, ProcessSandbox] = {}
        self._uids = _UidPool(run_as_root_uid_base)
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._closed = False
        self._prepared = False

    def kinds(self) -> Sequence[str]:
        return list(KINDS)

    async def start(self) -> None:
        self._prepare_work_root()
        await self._running_zygote()

    async def close(self) -> None:
        self._closed = True
        sandboxes = list(self._sandboxes.values())
        await asyncio.gather(*(s.destroy() for s in sandboxes), return_exceptions=True)
        if self._zygote is not None:
            await self._zygote.close()  # it kills and sweeps whatever is left first
            self._zygote = None
        self._uids.close()

    async def create(self, spec: SandboxSpec) -> Sandbox:
        if self._closed:
            raise SandboxError("the sandbox factory is closed")
        if spec.kind not in KINDS:
            raise SandboxError(f"kind {spec.kind!r} is not supported by process sandboxes")
        if not self._prepared:
            self._prepare_work_root()  # create() without start()
        zygote = await self._running_zygote()
        sandbox_id = f"sbx-{self._prefix}-{next(self._ids)}"
        slot = self._uids.take() if self.isolated else None
        uid = self.uid_base + slot if slot is not None else None
        work_dir = self.work_root / sandbox_id
        try:
            _make_work_dir(work_dir, uid)
            forked, control, out_fd, err_fd = await self._fork(zygote, spec, uid, work_dir)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            if slot is not None:
                self._uids.give_back(slot)
            raise
        sandbox = ProcessSandbox(self, zygote, sandbox_id, spec, forked, slot, work_dir)
        self._sandboxes[sandbox_id] = sandbox
        try:
            await sandbox.connect(control, out_fd, err_fd)
        except BaseException:
            await sandbox.destroy()
            raise
        return sandbox

    async def release(self, sandbox: ProcessSandbox, *, swept: bool) -> None:
        """A destroyed sandbox's work dir and uid slot go back (the slot only if swept)."""
        self._sandboxes.pop(sandbox.sandbox_id, None)
        await asyncio.to_thread(shutil.rmtree, sandbox.work_dir, True)
        if sandbox.slot is None:
            return
        if swept:
            self._uids.give_back(sandbox.slot)
        else:
            log.warning(
                "sandbox %s: processes of uid %s may survive; the uid is not reused",
                sandbox.sandbox_id,
                sandbox.uid,
            )

    # -- helpers ------------------------------------------------------------------------------

    async def _fork(
        self,
        zygote: _Zygote,
        spec: SandboxSpec,
        uid: int | None,
        work_dir: Path,
    ) -> tuple[_Forked, socket.socket, int, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = {
            "op": "fork",
            "workdir": str(work_dir),
            "uid": uid,
            "memory_mb": spec.memory_mb,
            "nproc": NPROC_LIMIT if uid is not None else None,
            "nofile": NOFILE_LIMIT,
            "env": {
                "PATH": os.environ.get("PATH", DEFAULT_PATH),
                "LANG": "C.UTF-8",
                "HOME": str(work_dir),
            },
        }
        try:
            try:
                forked = await zygote.fork(request, [theirs.fileno(), out_w, err_w])
            finally:
                # The child holds its own copies now; ours would keep EOF from ever coming.
                theirs.close()
                os.close(out_w)
                os.close(err_w)
        except BaseException:
            ours.close()
            os.close(out_r)
            os.close(err_r)
            raise
        return forked, ours, out_r, err_r

    async def _running_zygote(self) -> _Zygote:
        zygote = self._zygote
        if zygote is not None and zygote.alive:
            return zygote
        async with self._zygote_lock:
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                log.warning(
                    "the sandbox zygote (pid %d) died; starting a new one", self._zygote.pid
                )
                await self._zygote.close()
                self._zygote = None
            self._zygote = await _start_zygote()
            return self._zygote

    def _prepare_work_root(self) -> None:
        self._prepared = True
        self.work_root.mkdir(parents=True, exist_ok=True)
        if not self.isolated:
            return
        self._uids.open()
        # 0711: a sandbox user reaches its own 0700 dir by name but cannot list the others.
        os.chmod(self.work_root, 0o711)
        if _reachable_by_others(self.work_root):
            return
        fallback = Path(tempfile.mkdtemp(prefix="squall-sandboxes-"))
        os.chmod(fallback, 0o711)
        log.warning(
            "sandbox users cannot reach %s (a parent lacks o+x); using %s instead",
            self.work_root,
            fallback,
        )
        self.work_root = fallback


async def _start_zygote() -> _Zygote:
    zygote = _Zygote(asyncio.get_running_loop())
    try:
        await zygote.wait_ready()
    except BaseException as exc:
        await zygote.close()
        if isinstance(exc, (SandboxError, TimeoutError)):
            raise SandboxError(f"the sandbox zygote did not start: {exc}") from exc
        raise
    return zygote


def _make_work_dir(path: Path, uid: int | None) -> None:
    os.mkdir(path, 0o700)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)


def _reachable_by_others(path: Path) -> bool:
    for part in (path.resolve(), *path.resolve().parents):
        if not os.stat(part).st_mode & stat.S_IXOTH:
            return False
    return True
