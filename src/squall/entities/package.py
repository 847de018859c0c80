"""Packages and package bindings: validation of the PUT body and OpenWhisk's JSON views."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from squall.config import SystemLimits
from squall.entities.action import (
    EntityTooLarge,
    InvalidEntity,
    bump_version,
    key_value_dict,
    key_value_list,
)
from squall.entities.names import DEFAULT_NAMESPACE, IllegalName, check_name

JSON = dict[str, Any]

# `/api/v1/web/{ns}/default/{action}` names actions outside any package.
RESERVED_PACKAGE_NAME = "default"
CANNOT_BECOME_BINDING = "Resource is a package and cannot be converted into a binding."
CANNOT_BECOME_PACKAGE = "Resource is a binding and cannot be converted into a package."


def reserved_name(name: str) -> str:
    return f"Package name '{name}' is reserved."


@dataclass(slots=True, frozen=True)
class Binding:
    """What a binding aliases: a package of (usually another) namespace."""

    namespace: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> JSON:
        return {"namespace": self.namespace, "name": self.name}


@dataclass(slots=True)
class Package:
    """A package as stored and as served; with `binding` it is an alias with its own params."""

    namespace: str
    name: str
    version: str = "0.0.1"
    publish: bool = False
    parameters: list[JSON] = field(default_factory=list)
    annotations: list[JSON] = field(default_factory=list)
    binding: Binding | None = None
    updated: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"

    def parameter_values(self) -> JSON:
        return key_value_dict(self.parameters)

    def to_json(self) -> JSON:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "publish": self.publish,
            "parameters": self.parameters,
            "annotations": self.annotations,
            # OpenWhisk shows `{}` for a package that is not a binding.
            "binding": self.binding.to_json() if self.binding else {},
            "updated": self.updated,
        }

    def brief(self) -> JSON:
        """The listing view: no parameters."""
        view = self.to_json()
        view.pop("parameters")
        return view

    @classmethod
    def from_json(cls, doc: JSON) -> Package:
        raw = doc.get("binding") or None
        return cls(
            namespace=doc["namespace"],
            name=doc["name"],
            version=doc.get("version", "0.0.1"),
            publish=bool(doc.get("publish", False)),
            parameters=list(doc.get("parameters", [])),
            annotations=list(doc.get("annotations", [])),
            binding=Binding(raw["namespace"], raw["name"]) if raw else None,
            updated=int(doc.get("updated", 0)),
        )


def parse_binding(value: Any, owner: str) -> Binding | None:
    """The `binding` of a PUT body: `{namespace, name}`; `{}` or absent means none."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise InvalidEntity("The binding must be an object with 'namespace' and 'name'.")
    namespace, name = value.get("namespace"), value.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise InvalidEntity("The binding must have a string 'namespace' and 'name'.")
    namespace = namespace.strip("/")
    if namespace == DEFAULT_NAMESPACE:
        namespace = owner
    try:
        return Binding(check_name(namespace, "namespace"), check_name(name, "package name"))
    except IllegalName as exc:
        raise InvalidEntity(str(exc)) from exc


def build_package(
    namespace: str, name: str, body: Any, *, system: SystemLimits, existing: Package | None
) -> Package:
    """The package a PUT body describes; with `existing`, an update keeping what is omitted."""
    if not isinstance(body, dict):
        raise InvalidEntity("The request content was malformed: the body must be a JSON object.")
    if name == RESERVED_PACKAGE_NAME:
        raise InvalidEntity(reserved_name(name))
    binding = parse_binding(body.get("binding"), namespace)
    if existing is not None:
        binding = _updated_binding(existing, binding, "binding" in body)
    params = (
        key_value_list(body["parameters"], "parameters")
        if "parameters" in body
        else (existing.parameters if existing else [])
    )
    size = len(orjson.dumps(params))
    if size > system.parameters_bytes:
        raise EntityTooLarge(
            f"The parameters are larger than allowed: {size} > {system.parameters_bytes} bytes."
        )
    annotations = (
        key_value_list(body["annotations"], "annotations")
        if "annotations" in body
        else (existing.annotations if existing else [])
    )
    return Package(
        namespace=namespace,
        name=name,
        version=bump_version(existing.version) if existing else "0.0.1",
        publish=bool(body.get("publish", existing.publish if existing else False)),
        parameters=params,
        annotations=annotations,
        binding=binding,
        updated=int(time.time() * 1000),
    )


class PackageKindChange(ValueError):
    """An update would turn a package into a binding or back (answered with 409)."""


def _updated_binding(existing: Package, requested: Binding | None, given: bool) -> Binding | None:
    if existing.binding is None:
        if requested is not None:
            raise PackageKindChange(CANNOT_BECOME_BINDING)
        return None
    if not given:
        return existing.binding
    if requested is None:
        raise PackageKindChange(CANNOT_BECOME_PACKAGE)
    return requested
