"""The process sandbox: a zygote-forked child per sandbox running Python actions."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import tempfile
import textwrap
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from squall.abc import InitPayload, RunPayload, SandboxOutcome, SandboxSpec
from squall.sandbox.process import ProcessSandbox, ProcessSandboxFactory

pytestmark = pytest.mark.timeout(30)

IS_ROOT = os.geteuid() == 0
# CI runs as root; there a missing privilege must fail these tests, never skip them.
root_only = pytest.mark.skipif(
    not IS_ROOT and os.environ.get("CI") != "true", reason="per-sandbox uids need root"
)
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr): (.*)$", re.S)
SPEC = SandboxSpec(kind="python:3", memory_mb=128, log_limit_bytes=10 * 1024 * 1024)

HELLO = """
def main(args):
    return {"greeting": "Hello " + args.get("name", "stranger") + "!"}
"""


@pytest.fixture
def work_root() -> Iterator[Path]:
    # Not tmp_path: pytest's base dir is 0700, which sandbox users could not traverse.
    root = Path(tempfile.mkdtemp(prefix="squall-test-sbx-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def factory(work_root: Path) -> AsyncIterator[ProcessSandboxFactory]:
    f = ProcessSandboxFactory(work_root)
    await f.start()
    try:
        yield f
    finally:
        await f.close()


async def make(
    factory: ProcessSandboxFactory,
    code: str,
    *,
    main: str = "main",
    spec: SandboxSpec = SPEC,
    binary: bool = False,
    env: dict[str, str] | None = None,
) -> ProcessSandbox:
    sandbox = await factory.create(spec)
    assert isinstance(sandbox, ProcessSandbox)
    outcome = await sandbox.init(
        InitPayload("test", main, textwrap.dedent(code), binary, env or {}), 5.0
    )
    assert outcome.failure is None, outcome
    return sandbox


async def run(
    sandbox: ProcessSandbox,
    value: dict[str, Any] | None = None,
    context: dict[str, str] | None = None,
    limit_s: float = 5.0,
) -> SandboxOutcome:
    return await sandbox.run(RunPayload(value or {}, context or {}), limit_s)


def result(outcome: SandboxOutcome) -> Any:
    assert outcome.failure is None, outcome
    assert outcome.response is not None
    return json.loads(outcome.response)


def messages(outcome: SandboxOutcome) -> list[tuple[str, str]]:
    parsed = []
    for line in outcome.logs:
        match = LOG_LINE.match(line)
        assert match, line
        parsed.append((match.group(1), match.group(2)))
    return parsed


def processes_of(uid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid:
            found.append(proc)
    return found


# ---------------------------------------------------------------------------------------------
# Results and parameters
# ---------------------------------------------------------------------------------------------


async def test_hello_world_returns_json(factory: ProcessSandboxFactory) -> None:
    sandbox = await make(factory, HELLO)
    outcome = await run(sandbox)
    assert result(outcome) == {"greeting": "Hello stranger!"}
    assert outcome.fatal is False and outcome.timed_out is False
    await sandbox.destroy()


async def test_sandboxes_run_under_sched_batch(factory: ProcessSandboxFactory) -> None:
    """So a woken sandbox does not preempt the platform's event loop (see zygote.run_as_batch)."""
    code = "import os\ndef main(a):\n    return {'policy': os.sched_getscheduler(0)}\n"
    sandbox = await make(factory, code)
    assert result(await run(sandbox)) == {"policy": os.SCHED_BATCH}
    assert os.sched_getscheduler(os.getpid()) == os.SCHED_OTHER  # the platform keeps its own
    await sandbox.destroy()


async def test_params_reach_main(factory: ProcessSandboxFactory) -> None:
    sandbox = await make(factory, HELLO)
    assert result(await run(sandbox, {"name": "Ada"})) == {"greeting": "Hello Ada!"}
    await sandbox.destroy()


async def test_custom_entry_point(factory: ProcessSandboxFactory) -> None:
    code = "def handler(args):\n    return {'via': 'handler', 'n': args['n'] * 2}\n"
    sandbox = await make(factory, code, main="handler")
    assert result(await run(sandbox, {"n": 21})) == {"via": "handler", "n": 42}
    await sandbox.destroy()


async def test_list_result_is_returned(factory: ProcessSandboxFactory) -> None:
    sandbox = await make(factory, "def main(a):\n    return [1, {'two': 2}]\n")
    assert result(await run(sandbox)) == [1, {"two": 2}]
    await sandbox.destroy()


async def test_string_result_is_passed_through_raw(factory: ProcessSandboxFactory) -> None:
    # Calling this a developer error is the invoker's job; the sandbox reports what it got.
    sandbox = await make(factory, "def main(a):\n    return 'str'\n")
    outcome = await run(sandbox)
    assert outcome.failure is None
    assert outcome.response == b'"str"'
    await sandbox.destroy()


async def test_none_result_has_no_response(factory: ProcessSandboxFactory) -> None:
    sandbox = await make(factory, "def main(a):\n    pass\n")
    outcome = await run(sandbox)
    assert outcome.response is None and outcome.failure is None
    await sandbox.destroy()


async def test_non_json_result_fails(factory: ProcessSandboxFactory) -> None:
    sandbox = await make(factory, "def main(a):\n    return {'s': {1, 2}}\n")
    outcome = await run(sandbox)
    assert outcome.response is None
    assert outcome.failure is not None and "valid JSON" in outcome.failure
    assert outcome.fatal is False
    assert (await run(sandbox)).failure == outcome.failure  # not fatal: it still serves
    await sandbox.destroy()


async def test_exception_is_an_error_result_with_traceback(factory: ProcessSandboxFactory) -> None:
    code = """
    def main(args):
        raise ValueError("bad input")
    """
    sandbox = await make(factory, code)
    outcome = await run(sandbox)
    assert result(outcome) == {"error": "bad input"}
    stderr = "\n".join(text for stream, text in messages(outcome) if stream == "stderr")
    assert "Traceback" in stderr and "ValueError: bad input" in stderr
    assert 'raise ValueError("bad input")' in stderr  # source lines come from linecache
    await sandbox.destroy()


# ---------------------------------------------------------------------------------------------
# Init
# ---------------------------------------------------------------------------------------------


async def test_syntax_error_fails_init(factory: ProcessSandboxFactory) -> None:
    sandbox = await factory.create(SPEC)
    outcome = await sandbox.init(InitPayload("t", "main", "def main(:\n", False, {}), 5.0)
    assert outcome.failure is not None and "SyntaxError" in outcome.failure
    assert outcome.fatal is True
    await sandbox.destroy()


async def test_missing_main_fails_init(factory: ProcessSandboxFactory) -> None:
    sandbox = await factory.create(SPEC)
    outcome = await sandbox.init(
        InitPayload("t", "main", "def other(a):\n    pass\n", False, {}), 5.0
    )
    assert outcome.failure == "Action main not found"
    assert outcome.fatal is True
    await sandbox.destroy()


async def test_init_env_is_exported(factory: ProcessSandboxFactory) -> None:
    code = "import os\ndef main(a):\n    return {'v': os.environ.get('MY_SETTING')}\n"
    sandbox = await make(factory, code, env={"MY_SETTING": "on"})
    assert result(await run(sandbox)) == {"v": "on"}
    await sandbox.destroy()


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


async def test_zip_action_with_main_module_and_virtualenv(factory: ProcessSandboxFactory) -> None:
    code = zipped(
        {
            "__main__.py": "import helper, vendored\n"
            "def main(a):\n    return {'h': helper.twice(a['n']), 'v': vendored.V}\n",
            "helper.py": "def twice(n):\n    return 2 * n\n",
            "virtualenv/lib/python3.11/site-packages/vendored.py": "V = 'from venv'\n",
        }
    )
    sandbox = await make(factory, code, binary=True)
    assert result(await run(sandbox, {"n": 4})) == {"h": 8, "v": "from venv"}
    await sandbox.destroy()


async def test_zip_without_main_module_fails_init(factory: ProcessSandboxFactory) -> None:
    sandbox = await factory.create(SPEC)
    code = zipped({"other.py": "x = 1\n"})
    outcome = await sandbox.init(InitPayload("t", "main", code, True, {}), 5.0)
    assert outcome.failure is not None and "__main__.py" in outcome.failure
    await sandbox.destroy()


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


def by_stream(outcome: SandboxOutcome) -> dict[str, list[str]]:
    """Lines per stream. Across streams the order is arrival order, which for lines written
    within microseconds of each other depends on which pipe the loop reads first."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for stream, text in messages(outcome):
        streams[stream].append(text)
    return streams


async def test_stdout_and_stderr_are_captured(factory: ProcessSandboxFactory) -> None:
    code = """
    import sys, time
    def main(args):
        print("first")
        print("second", file=sys.stderr)
        print("third")
        time.sleep(0.05)
        print("late", file=sys.stderr)
        return {}
    """
    sandbox = await make(factory, code)
    outcome = await run(sandbox)
    assert by_stream(outcome) == {"stdout": ["first", "third"], "stderr": ["second", "late"]}
    assert messages(outcome)[-1] == ("stderr", "late")  # arrival order
    assert not any(SENTINEL in line for line in outcome.logs)
    # The next activation starts with a clean slate.
    assert by_stream(await run(sandbox)) == {
        "stdout": ["first", "third"],
        "stderr": ["second", "late"],
    }
    await sandbox.destroy()


async def test_print_without_newline_is_captured(factory: ProcessSandboxFactory) -> None:
    code = """
    import sys
    def main(args):
        print("no newline", end="")
        sys.stderr.write("partial err")
        return {}
    """
    sandbox = await make(factory, code)
    outcome = await run(sandbox)
    assert sorted(messages(outcome)) == [("stderr", "partial err"), ("stdout", "no newline")]
    await sandbox.destroy()


async def test_logs_are_truncated_at_the_limit(factory: ProcessSandboxFactory) -> None:
    spec = SandboxSpec("python:3", 128, log_limit_bytes=1000)
    code = "def main(a):\n    for i in range(100):\n        print('%03d' % i + 'x' * 46)\n"
    sandbox = await make(factory, code, spec=spec)
    outcome = await run(sandbox)
    assert outcome.failure is None
    lines = messages(outcome)
    assert lines[-1] == (
        "stderr",
        "Logs were truncated because the total bytes size exceeds the limit of 1000 bytes.",
    )
    assert sum(len(text) for _s, text in lines[:-1]) <= 1000
    assert len(lines) == 21  # 20 lines of 49 bytes fit
    await sandbox.destroy()


async def test_endless_printing_with_timeout_ends_cleanly(factory: ProcessSandboxFactory) -> None:
    spec = SandboxSpec("python:3", 128, log_limit_bytes=10_000)
    code = "def main(a):\n    while True:\n        print('y' * 200)\n"
    sandbox = await make(factory, code, spec=spec)
    started = time.monotonic()
    outcome = await run(sandbox, limit_s=1.0)
    assert time.monotonic() - started < 4
    assert outcome.timed_out and outcome.fatal and outcome.failure == "timeout"
    assert "Logs were truncated" in outcome.logs[-1]
    assert len(outcome.logs) < 100
    await sandbox.destroy()
    assert not psutil.pid_exists(sandbox.pid)


# ---------------------------------------------------------------------------------------------
# Warm state and environment
# ---------------------------------------------------------------------------------------------


async def test_warm_runs_keep_module_globals(factory: ProcessSandboxFactory) -> None:
    code = """
    count = 0
    def main(args):
        global count
        count += 1
        return {"count": count}
    """
    sandbox = await make(factory, code)
    assert result(await run(sandbox)) == {"count": 1}
    assert result(await run(sandbox)) == {"count": 2}
    await sandbox.destroy()


async def test_context_is_exported_as_ow_variables_during_the_run(
    factory: ProcessSandboxFactory,
) -> None:
    code = """
    import os
    def main(args):
        return {k: v for k, v in os.environ.items() if k.startswith("__OW_")}
    """
    sandbox = await make(factory, code)
    context = {
        "activation_id": "a1b2",
        "namespace": "guest",
        "action_name": "/guest/t",
        "api_key": "k:s",
        "deadline": "123",
    }
    assert result(await run(sandbox, context=context)) == {
        "__OW_ACTIVATION_ID": "a1b2",
        "__OW_NAMESPACE": "guest",
        "__OW_ACTION_NAME": "/guest/t",
        "__OW_API_KEY": "k:s",
        "__OW_DEADLINE": "123",
    }
    # Removed after the run: the next activation without an api key does not see the old one.
    assert result(await run(sandbox, context={"activation_id": "c3"})) == {
        "__OW_ACTIVATION_ID": "c3"
    }
    await sandbox.destroy()


async def test_no_squall_variables_reach_the_action(
    work_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SQUALL_SECRET_FOR_TEST", "must-not-leak")
    factory = ProcessSandboxFactory(work_root)
    await factory.start()
    try:
        code = "import os\ndef main(a):\n    return dict(os.environ)\n"
        sandbox = await make(factory, code, env={"SQUALL_TOO": "x", "OK_VAR": "y"})
        env = result(await run(sandbox))
        assert not [k for k in env if k.startswith("SQUALL_")]
        assert env["OK_VAR"] == "y"
        assert set(env) <= {"PATH", "LANG", "HOME", "OK_VAR"}
        assert env["HOME"] == str(sandbox.work_dir)
    finally:
        await factory.close()


async def test_platform_packages_are_not_importable(factory: ProcessSandboxFactory) -> None:
    code = """
    def main(args):
        try:
            import squall
        except ImportError:
            return {"squall": False}
        return {"squall": True}
    """
    sandbox = await make(factory, code)
    assert result(await run(sandbox)) == {"squall": False}
    await sandbox.destroy()


async def test_lazy_stdlib_imports_work(factory: ProcessSandboxFactory) -> None:
    # Modules the zygote did not preload still import (stdlib may sit under a 0700 /root).
    code = """
    def main(args):
        import email.mime.text, sqlite3, xml.dom.minidom
        return {"ok": sqlite3.connect(":memory:").execute("select 1").fetchone()[0]}
    """
    sandbox = await make(factory, code)
    assert result(await run(sandbox)) == {"ok": 1}
    await sandbox.destroy()


# ---------------------------------------------------------------------------------------------
# Failures: timeouts, memory, crashes
# ---------------------------------------------------------------------------------------------


async def test_timeout_kills_the_sandbox(factory: ProcessSandboxFactory) -> None:
    code = "import time\ndef main(a):\n    print('before')\n    time.sleep(30)\n"
    sandbox = await make(factory, code)
    started = time.monotonic()
    outcome = await run(sandbox, limit_s=0.3)
    assert time.monotonic() - started < 3
    assert outcome == SandboxOutcome(
        None, outcome.logs, failure="timeout", fatal=True, timed_out=True
    )
    assert messages(outcome) == [("stdout", "before")]
    assert not psutil.pid_exists(sandbox.pid)
    again = await run(sandbox)
    assert again.fatal and again.failure
    await sandbox.destroy()


async def test_memory_limit(factory: ProcessSandboxFactory) -> None:
    spec = SandboxSpec("python:3", memory_mb=64, log_limit_bytes=10_000)
    code = """
    def main(args):
        block = bytearray(args["mb"] * 1024 * 1024)
        return {"len": len(block)}
    """
    sandbox = await make(factory, code, spec=spec)
    # The action gets its memory_mb on top of the interpreter's own footprint ...
    assert result(await run(sandbox, {"mb": 48})) == {"len": 48 * 1024 * 1024}
    # ... and no more.
    outcome = await run(sandbox, {"mb": 128})
    assert outcome.failure == "memory" and outcome.fatal
    await sandbox.destroy()
    other = await make(factory, HELLO)  # the platform is fine
    assert result(await run(other))
    await other.destroy()


async def test_thread_pools_fit_in_a_small_memory_limit(factory: ProcessSandboxFactory) -> None:
    # RLIMIT_AS counts reserved address space: per-thread malloc arenas and 8 MiB stacks
    # would exhaust 128 MB long before any memory is used.
    code = """
    from concurrent.futures import ThreadPoolExecutor
    def main(args):
        with ThreadPoolExecutor(32) as pool:
            return {"sum": sum(pool.map(lambda i: len(bytearray(100_000)) + i, range(200)))}
    """
    sandbox = await make(factory, code)
    assert result(await run(sandbox)) == {"sum": 200 * 100_000 + sum(range(200))}
    await sandbox.destroy()


async def test_closing_the_control_channel_is_a_crash(factory: ProcessSandboxFactory) -> None:
    code = "import os, time\ndef main(a):\n    os.close(3)\n    time.sleep(0.2)\n    os._exit(0)\n"
    sandbox = await make(factory, code)
    outcome = await run(sandbox)
    assert outcome.fatal and outcome.failure == "crashed: exit status 0"
    await sandbox.destroy()


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        ("import os\ndef main(a):\n    os._exit(3)\n", "crashed: exit status 3"),
        (
            "import os, signal\ndef main(a):\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
            "crashed: killed by signal 11",
        ),
        ("import sys\ndef main(a):\n    sys.exit(5)\n", "crashed: exit status 5"),
    ],
)
async def test_a_dying_child_is_reported(
    factory: ProcessSandboxFactory,
    code: str,
    failure: str,
) -> None:
    sandbox = await make(factory, code)
    outcome = await run(sandbox)
    assert outcome.failure == failure and outcome.fatal and not outcome.timed_out
    await sandbox.destroy()


async def test_death_while_idle_is_reported_on_the_next_call(
    factory: ProcessSandboxFactory,
) -> None:
    sandbox = await make(factory, HELLO)
    os.kill(sandbox.pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    outcome = await run(sandbox)
    assert outcome.failure == f"crashed: killed by signal {signal.SIGTERM.value}"
    assert outcome.fatal
    await sandbox.destroy()


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------


async def test_destroy_leaves_no_process_and_no_work_dir(factory: ProcessSandboxFactory) -> None:
    code = """
    import os, subprocess, time
    def main(args):
        subprocess.Popen(["sleep", "60"], start_new_session=True)  # escapes the group
        if os.fork() == 0:
            time.sleep(60)
        return {}
    """
    sandbox = await make(factory, code)
    result(await run(sandbox))
    assert sandbox.memory_bytes() > 0
    zygote = psutil.Process(factory._zygote.pid)  # type: ignore[union-attr]
    assert zygote.children(recursive=True)
    await sandbox.destroy()
    await asyncio.sleep(0.05)
    assert not psutil.pid_exists(sandbox.pid)
    assert sandbox.memory_bytes() == 0
    assert not sandbox.work_dir.exists()
    assert [p for p in zygote.children(recursive=True) if p.status() != "zombie"] == []
    if sandbox.uid is not None:
        assert processes_of(sandbox.uid) == []


async def test_close_kills_every_sandbox(work_root: Path) -> None:
    factory = ProcessSandboxFactory(work_root)
    await factory.start()
    sandboxes = [await make(factory, HELLO) for _ in range(3)]
    zygote_pid = factory._zygote.pid  # type: ignore[union-attr]
    await factory.close()
    assert not psutil.pid_exists(zygote_pid)
    assert not any(psutil.pid_exists(s.pid) for s in sandboxes)


async def test_a_dead_zygote_is_restarted(factory: ProcessSandboxFactory) -> None:
    first = await make(factory, HELLO)
    old = factory._zygote.pid  # type: ignore[union-attr]
    os.kill(old, signal.SIGKILL)
    await asyncio.sleep(0.2)
    outcome = await run(first)  # its child died with the zygote
    assert outcome.fatal and outcome.failure
    await first.destroy()
    second = await make(factory, HELLO)
    assert factory._zygote.pid != old  # type: ignore[union-attr]
    assert result(await run(second))
    await second.destroy()


async def test_many_sandboxes_concurrently(factory: ProcessSandboxFactory) -> None:
    sandboxes = await asyncio.gather(*(make(factory, HELLO) for _ in range(8)))
    outcomes = await asyncio.gather(*(run(s, {"name": str(i)}) for i, s in enumerate(sandboxes)))
    assert [result(o)["greeting"] for o in outcomes] == [f"Hello {i}!" for i in range(8)]
    assert len({s.sandbox_id for s in sandboxes}) == 8
    await asyncio.gather(*(s.destroy() for s in sandboxes))


async def test_without_dedicated_uids_destroy_still_kills_descendants(work_root: Path) -> None:
    # What a non-root platform does: no uid switch, so the sandbox's tree is what gets killed.
    factory = ProcessSandboxFactory(work_root)
    factory.isolated = False
    await factory.start()
    try:
        code = """
        import os, subprocess
        def main(args):
            child = subprocess.Popen(["sleep", "60"], start_new_session=True)
            return {"uid": os.getuid(), "child": child.pid}
        """
        sandbox = await make(factory, code)
        got = result(await run(sandbox))
        assert sandbox.uid is None and got["uid"] == os.getuid()
        assert psutil.pid_exists(got["child"])
        await sandbox.destroy()
        await asyncio.sleep(0.05)
        assert not psutil.pid_exists(got["child"]) or (
            psutil.Process(got["child"]).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        await factory.close()


def test_kinds_and_isolation_flags(work_root: Path) -> None:
    factory = ProcessSandboxFactory(work_root)
    python = ["python:3", "python:3.11", "python:default"]
    node = ["nodejs:20", "nodejs:default"] if shutil.which("node") else []
    assert list(factory.kinds()) == sorted(python + node)
    assert factory.isolation_degraded is (not IS_ROOT)
    assert (factory.isolation_reason is None) is IS_ROOT


# ---------------------------------------------------------------------------------------------
# Isolation (root only: each sandbox gets its own uid)
# ---------------------------------------------------------------------------------------------


@root_only
async def test_action_runs_unprivileged(factory: ProcessSandboxFactory, work_root: Path) -> None:
    secret_dir = Path(tempfile.mkdtemp(prefix="squall-secret-"))
    try:
        os.chmod(secret_dir, 0o755)
        secret = secret_dir / "secret"
        secret.write_text("root only")
        os.chmod(secret, 0o600)
        code = """
        import os
        def attempt(fn):
            try:
                fn()
            except PermissionError:
                return "denied"
            return "allowed"
        def main(args):
            return {
                "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                "read": attempt(lambda: open(args["secret"]).read()),
                "kill": attempt(lambda: os.kill(args["platform"], 0)),
                "peer": attempt(lambda: os.listdir(args["peer"])),
                "own": attempt(lambda: open("mine.txt", "w").write("x")),
            }
        """
        peer = await make(factory, HELLO)
        sandbox = await make(factory, code)
        got = result(
            await run(
                sandbox,
                {"secret": str(secret), "platform": os.getpid(), "peer": str(peer.work_dir)},
            )
        )
        assert got["uid"] != 0 and got["uid"] == sandbox.uid and got["gid"] == sandbox.uid
        assert got["groups"] == []
        assert got["read"] == "denied"
        assert got["kill"] == "denied"
        assert got["peer"] == "denied"
        assert got["own"] == "allowed"
        assert peer.uid != sandbox.uid
        assert oct(sandbox.work_dir.stat().st_mode & 0o777) == "0o700"
        assert sandbox.work_dir.stat().st_uid == sandbox.uid
        await sandbox.destroy()
        await peer.destroy()
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)


@root_only
async def test_fork_bomb_is_contained(factory: ProcessSandboxFactory) -> None:
    code = """
    import os, time
    def main(args):
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """
    sandbox = await make(factory, code)
    assert sandbox.uid is not None
    outcome = await run(sandbox, limit_s=1.0)
    assert outcome.timed_out and outcome.fatal
    await sandbox.destroy()
    assert processes_of(sandbox.uid) == []
    # The machine (and the platform) still forks fine.
    other = await make(factory, HELLO)
    assert result(await run(other))
    await other.destroy()


@root_only
async def test_uids_are_recycled(factory: ProcessSandboxFactory) -> None:
    first = await make(factory, HELLO)
    uid = first.uid
    await first.destroy()
    second = await make(factory, HELLO)
    assert second.uid == uid
    await second.destroy()


async def test_stem_cell_narrows_to_the_action_limits(factory: ProcessSandboxFactory) -> None:
    """A cell created with the largest limits serves a smaller action at that action's limits."""
    cell = await factory.create(SandboxSpec("python:default", 512, 10 * 1024 * 1024))
    try:
        code = (
            "def main(args):\n"
            "    blob = bytearray(args['mb'] * 1024 * 1024)\n"
            "    print('x' * 300)\n"
            "    return {'mb': len(blob) // (1024 * 1024)}\n"
        )
        payload = InitPayload("narrow", "main", code, False, {}, memory_mb=128, log_limit_bytes=100)
        assert (await cell.init(payload, 10)).failure is None
        small = await cell.run(RunPayload({"mb": 50}, {}), 10)
        assert result(small) == {"mb": 50}
        assert "truncated" in small.logs[-1] and "100 bytes" in small.logs[-1]
        big = await cell.run(RunPayload({"mb": 300}, {}), 10)
        assert big.failure == "memory"
    finally:
        await cell.destroy()
