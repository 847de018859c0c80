"""Dedicated sandbox uids, exclusive host-wide, and killing everything a uid runs."""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import signal
import stat
import tempfile
from pathlib import Path

from squall.errors import SandboxError

log = logging.getLogger("squall.sandbox")

MAX_UID_SLOTS = 100_000


def sweep_uid(uid: int) -> bool:
    """Without the zygote: SIGKILL every process of `uid` (ours alone, see UidPool).

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


class UidPool:
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
