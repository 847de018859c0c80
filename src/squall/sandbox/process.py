"""Process sandboxes for Python and Node.js actions.

A zygote process (zygote.py, stdlib only) holds a warm interpreter and forks one child per
sandbox. Each child gets its own session, resource limits and, when the platform runs as root,
its own unprivileged uid; it then runs launcher.py's loop. The platform talks to a sandbox over
a Unix stream socket (one JSON line per request and reply) and reads its stdout and stderr
pipes all the time, so an action's output can never block it. A Node.js sandbox is the same
child, prepared the same way, that then execs `node` with runner.js (the same line protocol).

Everything here runs on the event loop with no threads on the hot path: a run is one write,
one future and one timer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Callable, Sequence
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
from squall.runtimes import Manifest, RuntimeKind, load_manifest
from squall.sandbox.logs import LogBuffer, LogStream
from squall.sandbox.supervisor import DEFAULT_PATH, KILL_WAIT_S, ChildExit, Forked, Zygote
from squall.sandbox.uids import UidPool, sweep_uid

log = logging.getLogger(__name__)

RUNNER_JS = Path(__file__).with_name("runner.js")
RESULT_PREFIX = b'{"result":'

SENTINEL_GRACE_S = 0.05  # how long logs may trail the reply before the call ends without them
EXIT_WAIT_S = 1.0  # how long a dead child's exit status may take to arrive
NPROC_LIMIT = 64
NOFILE_LIMIT = 256

# Why a call stopped waiting.
_REPLY, _TIMEOUT, _DEAD = 0, 1, 2

P = TypeVar("P", bound=asyncio.BaseProtocol)


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


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
        zygote: Zygote,
        sandbox_id: str,
        spec: SandboxSpec,
        forked: Forked,
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
        self.current_logs = LogBuffer(spec.log_limit_bytes)
        self._out = LogStream(self, "stdout")
        self._err = LogStream(self, "stderr")
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
            self.current_logs = LogBuffer(payload.log_limit_bytes)
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
        # V8 aborts (SIGABRT) when the heap limit (--max-old-space-size) is reached.
        if exit_.signal == signal.SIGABRT and self.spec.kind.startswith("nodejs:"):
            return "memory"
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
        self.current_logs = LogBuffer(self.spec.log_limit_bytes)
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


# ---------------------------------------------------------------------------------------------
# Sandbox uids
# ---------------------------------------------------------------------------------------------


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

    def __init__(
        self,
        work_root: Path,
        *,
        runtimes: Manifest | None = None,
        run_as_root_uid_base: int = 200000,
    ) -> None:
        self.work_root = Path(work_root)
        self.runtimes = runtimes if runtimes is not None else load_manifest()
        self._runner_js: str | None = None
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
        self._zygote: Zygote | None = None
        self._zygote_lock = asyncio.Lock()
        self._sandboxes: dict[str, ProcessSandbox] = {}
        self._uids = UidPool(run_as_root_uid_base)
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._closed = False
        self._prepared = False

    def kinds(self) -> Sequence[str]:
        return sorted(self.runtimes.names())

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
        runtime = self.runtimes.resolve(spec.kind)
        if runtime is None:
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
            forked, control, out_fd, err_fd = await self._fork(
                zygote, spec, uid, work_dir, runtime
            )
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
        zygote: Zygote,
        spec: SandboxSpec,
        uid: int | None,
        work_dir: Path,
        runtime: RuntimeKind,
    ) -> tuple[Forked, socket.socket, int, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request: dict[str, Any] = {
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
        if runtime.family == "nodejs":
            # V8 reserves far more address space than it uses, so RLIMIT_AS would stop it from
            # starting: the heap limit is V8's own (an abort that the sandbox reports as memory).
            request["memory_mb"] = 0
            request["exec"] = self._node_argv(runtime, spec.memory_mb)
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

    def _node_argv(self, runtime: RuntimeKind, memory_mb: int) -> list[str]:
        if self._runner_js is None:
            # Passed as source, so no sandbox uid needs to reach the installed package's files.
            self._runner_js = RUNNER_JS.read_text()
        return [
            str(runtime.executable),
            f"--max-old-space-size={memory_mb}",
            "-e",
            self._runner_js,
        ]

    @property
    def zygote_alive(self) -> bool | None:
        """None before the zygote first started, else whether it still runs (for readiness);
        a dead one is replaced at the next container start."""
        return None if self._zygote is None else self._zygote.alive

    async def _running_zygote(self) -> Zygote:
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


async def _start_zygote() -> Zygote:
    zygote = Zygote(asyncio.get_running_loop())
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
