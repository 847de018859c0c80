"""Where the CLI finds the API host and the key.

As with `wsk`: a `KEY=VALUE` file (`WSK_CONFIG_FILE`, default `~/.wskprops`) holding `APIHOST`
and `AUTH`. `SQUALL_APIHOST`/`SQUALL_AUTH` override the file and the `--apihost`/`--auth`
options override both. The file holds a key, so it is only ever written with mode 0600.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

CONFIG_ENV = "WSK_CONFIG_FILE"
APIHOST_ENV = "SQUALL_APIHOST"
AUTH_ENV = "SQUALL_AUTH"
APIHOST_KEY = "APIHOST"
AUTH_KEY = "AUTH"
FILE_MODE = 0o600


class PropertiesError(Exception):
    """A setting is missing or malformed, or the properties file cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective API host and key, and where each came from (for `property get`)."""

    path: Path
    apihost: str | None
    auth: str | None
    apihost_source: str
    auth_source: str

    def require(self) -> tuple[str, str]:
        """The normalized API host and the key, or a hint on how to set what is missing."""
        if not self.apihost:
            raise PropertiesError(
                f"no API host is set; run 'squall property set --apihost HOST' or set {APIHOST_ENV}"
            )
        if not self.auth:
            raise PropertiesError(
                f"no auth key is set; run 'squall property set --auth UUID:KEY' or set {AUTH_ENV}"
            )
        check_auth(self.auth)
        return normalize_apihost(self.apihost), self.auth


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = env.get(CONFIG_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".wskprops"


def read_properties(path: Path) -> dict[str, str]:
    """The file's `KEY=VALUE` pairs; a missing file is simply empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise PropertiesError(f"cannot read {path}: {exc.strerror or exc}") from exc
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, value = _parse_line(line)
        if key:
            pairs[key] = value
    return pairs


def write_properties(path: Path, updates: Mapping[str, str]) -> None:
    """Set `updates` in the file, keeping its other lines, atomically and with mode 0600."""
    try:
        # Follow a symlinked dotfile to its target rather than replacing the link.
        target = path.resolve()
        lines = target.read_text(encoding="utf-8").splitlines() if target.exists() else []
        _atomic_write(target, "".join(f"{line}\n" for line in _merge(lines, updates)))
    except OSError as exc:
        raise PropertiesError(f"cannot write {path}: {exc.strerror or exc}") from exc


def resolve(
    *,
    apihost: str | None = None,
    auth: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Options beat the environment, which beats the file."""
    env = os.environ if env is None else env
    path = config_path(env)
    stored = read_properties(path)
    host, host_source = _pick(apihost, env, APIHOST_ENV, stored, APIHOST_KEY, path)
    key, key_source = _pick(auth, env, AUTH_ENV, stored, AUTH_KEY, path)
    return Settings(path, host, key, host_source, key_source)


def normalize_apihost(apihost: str) -> str:
    """`127.0.0.1:3233` → `http://127.0.0.1:3233`; other hosts without a scheme get https."""
    host = apihost.strip().rstrip("/")
    # People paste the API base; the client appends /api/v1 itself.
    host = host.removesuffix("/api/v1").rstrip("/")
    if not host:
        raise PropertiesError("the API host is empty")
    if "://" in host:
        return host
    scheme = "http" if _is_loopback(urlsplit(f"//{host}").hostname or "") else "https"
    return f"{scheme}://{host}"


def check_auth(auth: str) -> str:
    user, sep, key = auth.partition(":")
    if not (sep and user and key):
        raise PropertiesError("the auth key must look like UUID:KEY")
    return auth


def mask_auth(auth: str) -> str:
    """`uuid:key` with the key hidden, for output that may end up in logs or screenshots."""
    user, sep, key = auth.partition(":")
    return f"{user}:{'*' * 8}" if sep and key else "*" * 8


def _pick(
    option: str | None,
    env: Mapping[str, str],
    env_name: str,
    stored: Mapping[str, str],
    key: str,
    path: Path,
) -> tuple[str | None, str]:
    """The first non-empty value of option, environment, file; and a name for its source."""
    if option:
        return option, "option"
    if env.get(env_name):
        return env[env_name], env_name
    if stored.get(key):
        return stored[key], str(path)
    return None, "unset"


def _parse_line(line: str) -> tuple[str | None, str]:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None, ""
    key, _, value = stripped.partition("=")
    return key.strip(), value.strip()


def _merge(lines: list[str], updates: Mapping[str, str]) -> list[str]:
    """Replace the lines of keys being set, in place, and append the keys that were absent."""
    pending = dict(updates)
    merged: list[str] = []
    for line in lines:
        key, _ = _parse_line(line)
        if key in pending:
            merged.append(f"{key}={pending.pop(key)}")
        elif key is None or key not in updates:
            merged.append(line)
    merged.extend(f"{key}={value}" for key, value in pending.items())
    return merged


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # Created 0600 from the start, so the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), FILE_MODE)  # O_CREAT's mode is moot if a stale tmp existed
            out.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
