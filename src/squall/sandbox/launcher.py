"""The loop inside a sandbox: loads the action on `init`, calls its entry point on each `run`.

This file runs in the forked sandbox child and is loaded by path from zygote.py, so it must stay
stdlib-only and never import `squall`. It mirrors openwhisk-runtime-python's launcher.

Control protocol: one JSON request per line on the control socket, one reply line per request.

- `{"init": {name, main, code, binary, env}}` -> `{"ok":true}` or `{"error": msg}`
- `{"run": {"value": {...}, "context": {...}}}` -> `{"result":<json text>}`, or
  `{"error": msg}` when the result is not JSON, or `{"failure":"memory"}`

After every request the sentinel line goes to stdout and stderr *before* the reply, so the
platform knows an activation's logs are complete once it has the reply and both sentinels.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import glob
import importlib.util
import io
import json
import linecache
import os
import resource
import site
import socket
import sys
import traceback
import types
import zipfile
from collections.abc import Callable
from typing import Any

SENTINEL = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"
NOT_JSON = "The action did not produce a valid JSON or JSON Array response"
MODULE_NAME = "main__"  # the module name openwhisk-runtime-python gives the action
SOURCE_NAME = "__main__.py"
ACTION_DIR = "action"  # zip actions are extracted here, inside the sandbox's work dir

# Pre-built so that answering a MemoryError needs no allocation of note.
_OK = b'{"ok":true}\n'
_MEMORY = b'{"failure":"memory"}\n'
_RESULT_PREFIX = b'{"result":'

Entry = Callable[[Any], Any]


class ActionLoadError(Exception):
    """The action cannot be initialised; the message is sent back as the init error."""


def serve(control_fd: int) -> None:
    """Answer requests on `control_fd` until the platform closes it."""
    # Line buffering keeps stdout and stderr lines in the order the action wrote them.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    sock = socket.socket(fileno=control_fd)
    Launcher(sock).serve()


class Launcher:
    """One action's life: a single init, then any number of runs."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._main: Entry | None = None
        self._exported: dict[str, str | None] = {}  # __OW_* values to restore after a run

    def serve(self) -> None:
        with self._sock.makefile("rb") as requests:
            for line in requests:
                reply = self.handle(line)
                end_activation()
                try:
                    self._sock.sendall(reply)
                except OSError:
                    return  # the platform is gone
                # The run's __OW_* variables go only now, off the reply's critical path.
                restore_env(self._exported)
                self._exported = {}

    def handle(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if "run" in request:
                return self._run(request["run"])
            if "init" in request:
                return self._init(request["init"])
            return error_reply("unknown request")
        except MemoryError:
            return _MEMORY

    def _init(self, init: dict[str, Any]) -> bytes:
        if self._main is not None:
            return error_reply("Cannot initialize the action more than once.")
        for key, value in (init.get("env") or {}).items():
            os.environ[str(key)] = str(value)
        if init.get("memory_mb"):
            lower_memory_limit(int(init["memory_mb"]))
        try:
            module = load_action(init)
            self._main = entry_point(module, init.get("main") or "main")
        except ActionLoadError as exc:
            return error_reply(str(exc))
        except MemoryError:
            return _MEMORY
        except Exception as exc:  # the action's own module code failed: report, do not die
            traceback.print_exc()
            return error_reply(traceback.format_exception_only(exc)[-1].strip())
        return _OK

    def _run(self, run: dict[str, Any]) -> bytes:
        if self._main is None:
            return error_reply("The action was not initialized.")
        self._exported = export_context(run.get("context") or {})
        try:
            result = self._main(run.get("value", {}))
        except MemoryError:
            return _MEMORY
        except Exception as exc:
            # openwhisk-runtime-python: an exception is an application error, not a crash.
            traceback.print_exc()
            result = {"error": str(exc)}
        return result_reply(result)


def lower_memory_limit(memory_mb: int) -> None:
    """Narrow a stem cell's address-space limit to the action's memory, on top of what the
    interpreter maps already. Lowering needs no privilege; it can never be raised again."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = vm_size_bytes() + memory_mb * 1024 * 1024
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def vm_size_bytes() -> int:
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def load_action(init: dict[str, Any]) -> types.ModuleType:
    """Run the action's code as a fresh module."""
    code = init.get("code") or ""
    if init.get("binary"):
        return load_zip(code)
    return load_source(code)


def load_source(code: str) -> types.ModuleType:
    compiled = compile(code, SOURCE_NAME, "exec")
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = SOURCE_NAME
    sys.modules[MODULE_NAME] = module
    # There is no file to read, so tracebacks get the source from linecache.
    linecache.cache[SOURCE_NAME] = (len(code), None, code.splitlines(True), SOURCE_NAME)
    exec(compiled, module.__dict__)
    return module


def load_zip(code: str) -> types.ModuleType:
    try:
        data = base64.b64decode(code, validate=False)
        target = os.path.join(os.getcwd(), ACTION_DIR)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(target)  # extractall drops absolute and `..` member paths
    except (binascii.Error, zipfile.BadZipFile, ValueError) as exc:
        raise ActionLoadError(f"Unable to open the zip file: {exc}") from exc
    main_path = os.path.join(target, SOURCE_NAME)
    if not os.path.isfile(main_path):
        raise ActionLoadError("Zip file does not include __main__.py")
    sys.path.insert(0, target)
    activate_virtualenv(target)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, main_path)
    if spec is None or spec.loader is None:
        raise ActionLoadError("Cannot load __main__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def activate_virtualenv(target: str) -> None:
    """Put an optional bundled `virtualenv/` first on sys.path (with its .pth files)."""
    pattern = os.path.join(target, "virtualenv", "lib", "python3*", "site-packages")
    for packages in sorted(glob.glob(pattern)):
        sys.path.insert(0, packages)
        site.addsitedir(packages)


def entry_point(module: types.ModuleType, name: str) -> Entry:
    main = getattr(module, name, None)
    if not callable(main):
        raise ActionLoadError(f"Action {name} not found")
    return main  # type: ignore[no-any-return]


def export_context(context: dict[str, Any]) -> dict[str, str | None]:
    """Export each context key as `__OW_<KEY>`; return what to restore afterwards."""
    saved: dict[str, str | None] = {}
    for key, value in context.items():
        name = f"__OW_{str(key).upper()}"
        saved[name] = os.environ.get(name)
        os.environ[name] = str(value)
    return saved


def restore_env(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def result_reply(result: Any) -> bytes:
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False).encode()
    except MemoryError:
        return _MEMORY
    except (TypeError, ValueError, RecursionError):  # ValueError covers NaN, cycles, surrogates
        return error_reply(NOT_JSON)
    return _RESULT_PREFIX + text + b"}\n"


def error_reply(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


def end_activation() -> None:
    """Flush the action's output, then mark the end of this activation's logs on both streams."""
    streams = [sys.stdout, sys.stderr]
    if sys.__stdout__ is not sys.stdout or sys.__stderr__ is not sys.stderr:
        streams += [sys.__stdout__, sys.__stderr__]  # the action replaced them
    for stream in streams:
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # a closed or replaced stream must not break the protocol
            pass
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.write(fd, SENTINEL)
