"""A sandbox's stdout and stderr: lines with timestamps, the log limit, and the sentinels."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from typing import Any, Protocol

SENTINEL_LINE = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"
SENTINEL = SENTINEL_LINE[:-1]
_second_cache: list[Any] = [-1, ""]  # the last whole second and its formatted text
TRUNCATED_NOTE = "Logs were truncated because the total bytes size exceeds the limit of {} bytes."


class LogOwner(Protocol):
    """What a log stream reports to: the sandbox whose current activation collects lines."""

    current_logs: LogBuffer

    def streams_progressed(self) -> None: ...


def timestamp() -> str:
    """UTC with microseconds and Z, as OpenWhisk logs show; strftime only once per second."""
    now = time.time()
    second = int(now)
    if second != _second_cache[0]:
        moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
        _second_cache[:] = [second, moment.strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


class LogBuffer:
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


class LogStream(asyncio.Protocol):
    """Reads one of a sandbox's output pipes, always, and counts the activation sentinels."""

    def __init__(self, sandbox: LogOwner, name: str) -> None:
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

    def flush_partial(self, logs: LogBuffer) -> None:
        """A last line without its newline still belongs to the logs."""
        if self._buf and not logs.truncated:
            logs.add(self.name, self._buf, timestamp())
        self._buf = b""

    def _finish(self) -> None:
        if not self.eof:
            self.eof = True
            self.flush_partial(self._sandbox.current_logs)
            self._sandbox.streams_progressed()

    def _split(self, data: bytes, logs: LogBuffer) -> bool:
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
            stamp = stamp or timestamp()
            logs.add(self.name, line, stamp)
        self._buf = rest
        if len(rest) > logs.remaining:
            self._overflow(logs)
        return found

    def _overflow(self, logs: LogBuffer) -> None:
        logs.truncate(timestamp())
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
