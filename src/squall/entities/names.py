"""Entity names and fully qualified paths, with OpenWhisk's rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# OpenWhisk's EntityName regex: word characters, then word characters, spaces, @ . and -,
# not ending in a space. 256 characters at most.
_NAME = re.compile(r"\A([\w]|[\w][\w@ .-]*[\w@.-]+)\Z")
MAX_NAME_LENGTH = 256
DEFAULT_NAMESPACE = "_"


class IllegalName(ValueError):
    """A name or path does not follow OpenWhisk's naming rules."""


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if legal, else raise IllegalName with OpenWhisk-like wording."""
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise IllegalName(f"The {what} '{name}' contains illegal characters.")
    return name


@dataclass(slots=True, frozen=True)
class EntityPath:
    """`namespace[/package]` plus a name: `/guest/pkg/hello` is ("guest", "pkg", "hello")."""

    namespace: str
    package: str | None
    name: str

    @property
    def path(self) -> str:
        """The path the entity lives under: `guest` or `guest/pkg`."""
        return f"{self.namespace}/{self.package}" if self.package else self.namespace

    @property
    def relative(self) -> str:
        """The name without the namespace: `hello` or `pkg/hello`."""
        return f"{self.package}/{self.name}" if self.package else self.name

    @property
    def qualified(self) -> str:
        """The fully qualified name without the leading slash: `guest/pkg/hello`."""
        return f"{self.path}/{self.name}"

    def __str__(self) -> str:
        return "/" + self.qualified

    def to_json(self) -> dict[str, str]:
        """OpenWhisk's FullyQualifiedEntityName JSON: `{"path": "guest/pkg", "name": "hello"}`."""
        return {"path": self.path, "name": self.name}

    @classmethod
    def from_json(cls, value: Any) -> EntityPath:
        """The `{path, name}` form back (path `ns` or `ns/pkg`); IllegalName when malformed."""
        if not isinstance(value, dict):
            raise IllegalName("A fully qualified name must be an object with 'path' and 'name'.")
        path, name = value.get("path"), value.get("name")
        if not isinstance(path, str) or not isinstance(name, str):
            raise IllegalName("A fully qualified name must have a string 'path' and 'name'.")
        parts = path.split("/")
        if len(parts) > 2:
            raise IllegalName(f"The path '{path}' is not a valid entity path.")
        for part in [*parts, name]:
            check_name(part)
        return cls(parts[0], parts[1] if len(parts) == 2 else None, name)


def parse_qualified(text: str, default_namespace: str) -> EntityPath:
    """Parse `name`, `pkg/name`, `/ns/name` or `/ns/pkg/name` as wsk does.

    A leading slash means the first segment is a namespace; `_` stands for the caller's.
    """
    absolute = text.startswith("/")
    parts = text.strip("/").split("/")
    if (
        any(not p for p in parts)
        or len(parts) > (3 if absolute else 2)
        or (absolute and len(parts) < 2)
    ):
        raise IllegalName(f"The name '{text}' is not a valid entity name.")
    if absolute:
        namespace, rest = parts[0], parts[1:]
    else:
        namespace, rest = default_namespace, parts
    if namespace == DEFAULT_NAMESPACE:
        namespace = default_namespace
    for part in [namespace, *rest]:
        check_name(part)
    package = rest[0] if len(rest) == 2 else None
    return EntityPath(namespace, package, rest[-1])
