"""The runtimes manifest: which action kinds exist, their defaults and their stem cells.

OpenWhisk's `RUNTIMES_MANIFEST` in a reduced form. Families are `python` (run by the sandbox
zygote's own interpreter) and `nodejs` (run by a Node.js executable: `executable`, default
`node` on PATH). Each family may mark one kind `default`, which `family:default` names too. A
stem cell (`stemCells`: `initialCount`, `memory` like "256 MB") is a sandbox started ahead of
need: a Python cell lowers its memory limit at init, so without `memory` it gets the largest
action memory and fits every Python action; a Node.js heap is sized when the process starts,
so a Node.js cell fits only actions of exactly its memory.

Kinds whose runtime is not installed are left out: the API lists, and accepts, only kinds
that can run here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from squall.errors import ConfigurationError

FAMILIES = ("python", "nodejs")
_MEMORY = re.compile(r"^\s*(\d+)\s*(MB|M|MiB)?\s*$", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class StemCell:
    count: int
    memory_mb: int | None  # None: the largest action memory (Python cells narrow at init)


@dataclass(slots=True, frozen=True)
class RuntimeKind:
    kind: str
    family: str
    default: bool = False
    executable: str | None = None  # resolved path for families other than python
    stem_cells: tuple[StemCell, ...] = ()


@dataclass(slots=True, frozen=True)
class Manifest:
    """Kinds by name, in manifest order (`family:default` aliases excluded)."""

    kinds: dict[str, RuntimeKind] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # families left out because their runtime is not installed

    def names(self) -> frozenset[str]:
        """Every accepted kind name, `family:default` aliases included."""
        names = set(self.kinds)
        names.update(f"{k.family}:default" for k in self.kinds.values() if k.default)
        return frozenset(names)

    def resolve(self, kind: str) -> RuntimeKind | None:
        """The kind a name stands for (`nodejs:default` is the nodejs family's default)."""
        if kind in self.kinds:
            return self.kinds[kind]
        family, _, version = kind.partition(":")
        if version == "default":
            return next((k for k in self.kinds.values() if k.family == family and k.default),
                        None)  # fmt: skip
        return None

    def aliases(self) -> dict[str, str]:
        """`family:default` -> the kind it stands for."""
        return {f"{k.family}:default": k.kind for k in self.kinds.values() if k.default}

    def info(self) -> dict[str, list[dict[str, Any]]]:
        """The `runtimes` map of `GET /api/v1`, as OpenWhisk's controller lists it."""
        out: dict[str, list[dict[str, Any]]] = {}
        for k in self.kinds.values():
            out.setdefault(k.family, []).append(
                {"kind": k.kind, "default": k.default, "deprecated": False, "attached": False}
            )
        return out


def load_manifest(
    source: str | None = None, variable: str = "SQUALL_RUNTIMES_MANIFEST"
) -> Manifest:
    """The manifest from JSON text or a file path (`source`), else the one shipped.

    Only kinds whose runtime is installed are kept. Raises ConfigurationError naming
    `variable` when the manifest is not valid.
    """
    text = _manifest_text(source, variable)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{variable}: the runtimes manifest is not JSON: {exc}") from exc
    return _available(parse_manifest(data, variable))


def _manifest_text(source: str | None, variable: str) -> str:
    if source is None:
        return resources.files("squall").joinpath("runtimes.json").read_text()
    if source.lstrip().startswith("{"):
        return source
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}={source!r}: cannot read the runtimes manifest ({exc.strerror}); give "
            "JSON text or the path of a JSON file"
        ) from exc


def parse_manifest(data: Any, variable: str) -> Manifest:
    runtimes = data.get("runtimes") if isinstance(data, dict) else None
    if not isinstance(runtimes, dict) or not runtimes:
        raise ConfigurationError(f'{variable}: expected {{"runtimes": {{"python": [...], ...}}}}')
    kinds: dict[str, RuntimeKind] = {}
    for family, entries in runtimes.items():
        if family not in FAMILIES:
            raise ConfigurationError(
                f"{variable}: runtime family {family!r} is not supported; use "
                + " or ".join(FAMILIES)
            )
        if not isinstance(entries, list):
            raise ConfigurationError(f"{variable}: runtimes.{family} must be a list of kinds")
        for entry in entries:
            kind = _parse_kind(family, entry, variable)
            if kind.kind in kinds:
                raise ConfigurationError(f"{variable}: kind {kind.kind} is listed twice")
            kinds[kind.kind] = kind
        if sum(1 for k in kinds.values() if k.family == family and k.default) > 1:
            raise ConfigurationError(f"{variable}: runtimes.{family} has more than one default")
    return Manifest(kinds)


def _parse_kind(family: str, entry: Any, variable: str) -> RuntimeKind:
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise ConfigurationError(f"{variable}: each of runtimes.{family} needs a 'kind'")
    kind = entry["kind"]
    if not kind.startswith(f"{family}:") or kind.endswith(":default"):
        raise ConfigurationError(
            f"{variable}: kind {kind!r} must be '{family}:<version>' ('{family}:default' "
            "names the kind marked default)"
        )
    cells = entry.get("stemCells") or []
    if not isinstance(cells, list):
        raise ConfigurationError(f"{variable}: stemCells of {kind} must be a list")
    executable = entry.get("executable")
    if executable is not None and not isinstance(executable, str):
        raise ConfigurationError(f"{variable}: executable of {kind} must be a string")
    if family != "python":
        executable = executable or family.replace("nodejs", "node")
    return RuntimeKind(
        kind=kind,
        family=family,
        default=entry.get("default") is True,
        executable=executable,
        stem_cells=tuple(_parse_cell(kind, cell, variable) for cell in cells),
    )


def _parse_cell(kind: str, cell: Any, variable: str) -> StemCell:
    count = cell.get("initialCount") if isinstance(cell, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigurationError(f"{variable}: stemCells of {kind} need an initialCount >= 0")
    memory = cell.get("memory")
    if memory is None:
        return StemCell(count, None)
    match = _MEMORY.match(str(memory))
    if match is None or int(match.group(1)) <= 0:
        raise ConfigurationError(f"{variable}: stem cell memory of {kind} must be like '256 MB'")
    return StemCell(count, int(match.group(1)))


def _available(manifest: Manifest) -> Manifest:
    """Keep the kinds whose runtime is installed, with executables resolved to paths."""
    kept: dict[str, RuntimeKind] = {}
    missing: list[str] = []
    for name, kind in manifest.kinds.items():
        if kind.executable is None:
            kept[name] = kind
            continue
        found = shutil.which(kind.executable)
        if found is None:
            missing.append(f"{kind.kind} ({kind.executable} not found)")
            continue
        kept[name] = replace(kind, executable=found)
    return Manifest(kept, tuple(missing))
