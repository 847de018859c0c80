"""The sandbox zygote: a warm interpreter that forks one child per sandbox.

Started by the platform as `python -I -S zygote.py <fd>` with a scrubbed environment. It is run
by file path and must stay stdlib-only: it never imports `squall`, so the platform's code and
settings are not in the memory every sandbox inherits. It pre-imports common modules once so
that every forked child shares them copy-on-write and starts without import cost.

Protocol on the SOCK_SEQPACKET socket `<fd>`, one JSON object per packet:

- platform -> zygote
  `{"op": "fork", "id", "workdir", "uid", "memory_mb", "nproc", "nofile", "env", "exec"?}` with
  three file descriptors (child's control socket, stdout pipe write end, stderr pipe write end);
  with `exec` (an argv), the prepared child execs that program (another language's runner,
  which finds its control socket on fd 3) instead of running launcher.py;
  `{"op": "kill", "pid"}`: kill the sandbox's process group and every process of its uid.
- zygote -> platform
  `{"ready": pid}`, `{"forked": pid, "id"}` or `{"error": msg, "id"}`,
  `{"exited": pid, "status", "signal"}` when a sandbox's main process dies,
  `{"killed": pid, "ok"}` once a kill request is done (`ok`: nothing of it is left).

When the platform closes its end, the zygote kills every sandbox and exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import importlib.util
import json
import os
import resource
import select
import signal
import socket
import stat
import sys
import threading
import time
import traceback
import types
from typing import Any

PRELOAD = (
    "encodings.ascii",
    "encodings.cp437",
    "encodings.idna",
    "encodings.latin_1",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "io",
    "itertools",
    "json",
    "linecache",
    "logging",
    "math",
    "operator",
    "pathlib",
    "pprint",
    "random",
    "re",
    "runpy",
    "secrets",
    "shutil",
    "site",
    "socket",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zipfile",
    "zlib",
)
CONTROL_FD = 3  # where a sandbox child finds its control socket
SWEEP_SECONDS = 2.0
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
M_ARENA_MAX = -8  # mallopt(3)
THREAD_STACK_BYTES = 2 * 1024 * 1024


def main(argv: list[str]) -> None:
    # Descriptors 0-2 must be taken, or received ones could land there and be clobbered.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    sock = socket.socket(fileno=int(argv[1]))
    launcher = load_launcher(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
    )
    for name in PRELOAD:
        # A trimmed Python build may lack one: fine, an action needing it fails on its own.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    kept_fds = relocate_hidden_paths()
    libc = load_libc()
    shrink_address_space_reservations(libc)
    prctl = Prctl(libc)
    # Orphaned grandchildren (an action's forks) become ours, so we reap them: no zombies.
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    run_as_batch()
    # Objects allocated so far are never collected; keeping the collector off their pages
    # keeps those pages shared with every child.
    gc.freeze()
    Zygote(sock, launcher, prctl, kept_fds).serve()


def run_as_batch() -> None:
    """Put the zygote, and so every sandbox (fork and exec keep it), under SCHED_BATCH.

    The kernel then never lets a sandbox that wakes up (a request written to it) preempt the
    platform's event loop on the core they share: the sandbox runs on an idle core, or once
    the loop waits. Under the default policy each request to a warm sandbox cost the loop a
    context switch: with 1,000 alarm fires a second through a no-op action, 671 fires/s and
    1.31 ms of platform CPU per fire, against 864 fires/s and 1.00 ms under SCHED_BATCH.
    Lowering one's own policy needs no privilege; where it is missing (not Linux) or refused
    (a seccomp profile), sandboxes keep the default."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def load_launcher(path: str) -> types.ModuleType:
    """Load launcher.py by path under a name no action module will collide with."""
    spec = importlib.util.spec_from_file_location("_squall_sandbox_launcher", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Prctl:
    """prctl(2) through ctypes; a no-op when ctypes or libc is unavailable."""

    def __init__(self, libc: Any) -> None:
        self._call: Any = getattr(libc, "prctl", None)

    def __call__(self, option: int, value: int) -> bool:
        if self._call is None:
            return False
        return bool(self._call(option, value, 0, 0, 0) == 0)


def load_libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def shrink_address_space_reservations(libc: Any) -> None:
    """RLIMIT_AS counts reserved address space, not memory used; trim the big reservations.

    glibc gives threads their own malloc arenas, each reserving 64 MiB, and threads an 8 MiB
    stack: a pool of 8 threads would exceed a 256 MB action's limit while using a few MB.
    Under the GIL one arena costs nothing, and 2 MiB of stack is ample for Python threads.
    """
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 1)
    threading.stack_size(THREAD_STACK_BYTES)


def exit_message(pid: int, status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"exited": pid, "status": None, "signal": os.WTERMSIG(status)}
    return {"exited": pid, "status": os.waitstatus_to_exitcode(status), "signal": None}


class Zygote:
    """The fork server's loop: fork requests, kill requests, and reaping."""

    def __init__(
        self,
        sock: socket.socket,
        launcher: types.ModuleType,
        prctl: Prctl,
        kept_fds: list[int],
    ) -> None:
        self.sock = sock
        self.launcher = launcher
        self.prctl = prctl
        self.kept_fds = kept_fds
        self.pid = os.getpid()
        self.children: dict[int, int | None] = {}  # live sandbox pid -> its uid
        self.owners: dict[int, int | None] = {}  # sandbox pid -> uid, until killed
        self.sweepers: dict[int, int] = {}  # sweeper pid -> sandbox pid it answers for
        self.wake_r, self.wake_w = os.pipe()

    # -- loop ---------------------------------------------------------------------------------

    def serve(self) -> None:
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # SIGCHLD only writes to the wake pipe; the loop below does the reaping.
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        self.send({"ready": self.pid})
        while True:
            for fd, _events in poller.poll():
                if fd == self.wake_r:
                    self.drain_wakeups()
                elif not self.handle_request():
                    self.shutdown()
                    return
            self.reap()

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the platform is gone; the next recv sees EOF
            self.sock.send(json.dumps(message).encode())

    def handle_request(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 3)
        except OSError:
            return False
        if not data:
            close_fds(fds)
            return False
        request = json.loads(data)
        op = request.get("op")
        if op == "fork":
            self.fork(request, fds)
        else:
            close_fds(fds)
            if op == "kill":
                self.kill(int(request["pid"]))
        return True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                del self.children[pid]
                self.send(exit_message(pid, status))
                if self.owners.get(pid, 0) is None:
                    # No uid to sweep by later, and once the session is empty its id may be
                    # reused: kill what is left now, while `pid` still names it.
                    del self.owners[pid]
                    kill_tree(pid)
            elif pid in self.sweepers:
                ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                self.send({"killed": self.sweepers.pop(pid), "ok": ok})
            # Anything else is an action's orphan, reaped here only so it leaves no zombie.

    # -- fork ---------------------------------------------------------------------------------

    def fork(self, request: dict[str, Any], fds: list[int]) -> None:
        if len(fds) != 3:
            close_fds(fds)
            self.send({"error": "expected three file descriptors", "id": request.get("id")})
            return
        uid = request.get("uid")
        try:
            pid = os.fork()
        except OSError as exc:
            close_fds(fds)
            self.send({"error": f"fork failed: {exc}", "id": request.get("id")})
            return
        if pid == 0:
            self.become_sandbox(request, fds)  # never returns
        close_fds(fds)
        self.children[pid] = uid
        self.owners[pid] = uid
        self.send({"forked": pid, "id": request.get("id")})

    def become_sandbox(self, request: dict[str, Any], fds: list[int]) -> None:
        code = 1
        try:
            self.forget_zygote_state()
            Child(request, fds, self.kept_fds, self.prctl, self.pid).prepare()
            if request.get("exec"):
                exec_runner([str(arg) for arg in request["exec"]], self.kept_fds)
            self.launcher.serve(CONTROL_FD)
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException:
            report_exception()
        finally:
            flush_stdio()
            os._exit(code)

    def forget_zygote_state(self) -> None:
        """In a fresh child: drop the zygote's signal wiring and its socket object."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # detach, not close: the descriptor is closed with all others, and the object must not
        # close whatever file later reuses the number.
        self.sock.detach()

    # -- kill ---------------------------------------------------------------------------------

    def kill(self, pid: int) -> None:
        if pid in self.sweepers.values():
            return  # a sweep for it is running; its end answers this request too
        if pid not in self.owners:
            self.send({"killed": pid, "ok": True})  # killed before, or never ours
            return
        uid = self.owners.pop(pid)
        if uid is None or uid == 0 or uid == os.getuid():
            # Walk the tree before killing: the dead leader's children would be re-parented.
            kill_tree(pid)
            if pid in self.children:
                kill_group(pid)
            self.send({"killed": pid, "ok": True})
            return
        if pid in self.children:
            kill_group(pid)
        try:
            self.sweepers[start_sweeper(uid)] = pid
        except OSError:
            self.send({"killed": pid, "ok": False})

    def shutdown(self) -> None:
        """The platform is gone: kill every sandbox, reap what we can, exit."""
        for pid in list(self.owners):
            self.kill(pid)
        deadline = time.monotonic() + SWEEP_SECONDS
        while (self.children or self.sweepers) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.005)


class Child:
    """Turns a freshly forked zygote child into a sandbox: fds, limits, identity, env."""

    def __init__(
        self,
        request: dict[str, Any],
        fds: list[int],
        kept_fds: list[int],
        prctl: Prctl,
        zygote_pid: int,
    ) -> None:
        self.request = request
        self.fds = fds
        self.kept_fds = kept_fds
        self.prctl = prctl
        self.zygote_pid = zygote_pid
        uid = request.get("uid")
        self.uid: int | None = int(uid) if uid is not None else None

    def prepare(self) -> None:
        os.setsid()  # its own process group, so one killpg ends everything it started
        self.arrange_fds()
        os.chdir(self.request["workdir"])
        apply_limits(
            int(self.request.get("memory_mb") or 0),
            self.request.get("nproc"),
            int(self.request.get("nofile") or 256),
        )
        if self.uid is not None:
            drop_privileges(self.uid)
        self.prctl(PR_SET_NO_NEW_PRIVS, 1)
        # After the identity change, which clears it: die with the zygote.
        self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.zygote_pid:
            raise SystemExit(1)  # the zygote died before PDEATHSIG was armed
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in self.request.get("env", {}).items()})

    def arrange_fds(self) -> None:
        control, out, err = self.fds
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.dup2(control, CONTROL_FD, inheritable=False)
        # Nothing of the zygote's (its socket, other sandboxes' fds in flight) may leak in;
        # only the directories of relocate_hidden_paths stay.
        start = CONTROL_FD + 1
        for fd in sorted(self.kept_fds):
            os.closerange(start, fd)
            start = fd + 1
        os.closerange(start, max_fd())


def exec_runner(argv: list[str], kept_fds: list[int]) -> None:
    """Replace the prepared child by another runtime's runner (never returns).

    Identity, limits, session, no-new-privs and the parent-death signal survive exec; the
    stdlib directories kept open for Python are closed, the control socket is passed on.
    """
    close_fds(kept_fds)
    os.set_inheritable(CONTROL_FD, True)
    os.execve(argv[0], argv, dict(os.environ))


def relocate_hidden_paths() -> list[int]:
    """Keep stdlib dirs a sandbox user cannot reach (e.g. under a 0700 /root) importable.

    A directory opened while root stays reachable through /proc/self/fd/N, which checks
    neither its ancestors' permissions nor, for the process itself, its non-dumpable state.
    Done once here, so every child inherits the moved paths and the open directories.
    Returns the descriptors children must keep.
    """
    moved: dict[str, str] = {}
    for index in unreachable_path_entries():
        fd = os.open(sys.path[index], os.O_RDONLY | os.O_DIRECTORY)
        # Above the numbers a child arranges (0-3) for its stdio and control socket.
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        moved[sys.path[index]] = sys.path[index] = f"/proc/self/fd/{high}"
    # Packages imported already (email, encodings, ...) find submodules via __path__.
    prefixes = sorted(moved, key=len, reverse=True)
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [relocate(path, prefixes, moved) for path in paths]
    sys.path_importer_cache.clear()
    return [int(path.rsplit("/", 1)[1]) for path in moved.values()]


def relocate(path: str, prefixes: list[str], moved: dict[str, str]) -> str:
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + os.sep):
            return moved[prefix] + path[len(prefix) :]
    return path


def unreachable_path_entries() -> list[int]:
    """Indexes of sys.path directories a user other than owner and group cannot reach."""
    if os.geteuid() != 0:
        return []
    return [
        i
        for i, entry in enumerate(sys.path)
        if os.path.isdir(entry) and not reachable_by_others(entry)
    ]


def reachable_by_others(path: str) -> bool:
    real = os.path.realpath(path)
    if not os.stat(real).st_mode & stat.S_IROTH:
        return False
    while True:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(real)
        if parent == real:
            return True
        real = parent


def apply_limits(memory_mb: int, nproc: int | None, nofile: int) -> None:
    if memory_mb > 0:
        # The interpreter's own mappings come on top, so the action gets its full memory_mb.
        limit = vm_size_bytes() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    set_lower_limit(resource.RLIMIT_NOFILE, nofile)
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc), int(nproc)))


def set_lower_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def vm_size_bytes() -> int:
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def start_sweeper(uid: int) -> int:
    """Fork a process that becomes `uid` and SIGKILLs every process of that uid.

    kill(-1) reaches exactly the processes the caller may signal, which for an unprivileged
    uid are its own: forks that left the process group (setsid) or the session are caught too.
    It reports success even when nothing was signalled, so /proc tells when none is left
    (zombies included: they still count against the next owner's RLIMIT_NPROC).
    """
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        drop_privileges(uid)
        me = os.getpid()
        deadline = time.monotonic() + SWEEP_SECONDS
        while time.monotonic() < deadline:
            os.kill(-1, signal.SIGKILL)
            if not [p for p in processes_of_uid(uid) if p != me]:
                code = 0
                break
            time.sleep(0.001)
    finally:
        os._exit(code)


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and real_uid(name) == uid:
            found.append(int(name))
    return found


def real_uid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_tree(root: int) -> None:
    """SIGKILL what a sandbox without a uid of its own started: its session and descendants.

    Descendants cover forks that left the session (setsid) while their parent lives; a
    daemon that also lost its parent escapes: only a dedicated uid catches that.
    """
    me = os.getpid()
    for _round in range(3):
        found = [pid for pid in tree_members(root) if pid != me]
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def tree_members(root: int) -> set[int]:
    members: set[int] = set()
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session, ...; zombies need no killing.
        if fields[0] == b"Z":
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        if int(fields[3]) == root:
            members.add(pid)
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in members:
                members.add(child)
                pending.append(child)
    return members


def max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def report_exception() -> None:
    with contextlib.suppress(BaseException):
        traceback.print_exc()


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass


if __name__ == "__main__":
    main(sys.argv)
