"""Triggers: validation of the PUT body, the rules map, and the JSON view OpenWhisk clients expect.

A trigger keeps, next to its own settings, the map of the rules attached to it: fully qualified
rule name (`guest/my-rule`) to the rule's action and status. Firing reads only that map, so a
fire is one document read however many rules there are; the rules API keeps it up to date.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from squall.config import SystemLimits
from squall.entities.action import (
    EntityTooLarge,
    InvalidEntity,
    bump_version,
    key_value,
    key_value_dict,
    key_value_list,
)
from squall.entities.names import EntityPath, IllegalName, parse_qualified

JSON = dict[str, Any]

ACTIVE = "active"
INACTIVE = "inactive"
RULE_STATUSES = (ACTIVE, INACTIVE)
FEED_ANNOTATION = "feed"


@dataclass(slots=True, frozen=True)
class RuleLink:
    """One entry of a trigger's rules map (OpenWhisk's ReducedRule)."""

    action: EntityPath
    status: str

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_json(self) -> JSON:
        return {"action": self.action.to_json(), "status": self.status}

    @classmethod
    def from_json(cls, doc: JSON) -> RuleLink:
        return cls(EntityPath.from_json(doc["action"]), str(doc.get("status", INACTIVE)))


@dataclass(slots=True)
class Trigger:
    """A trigger as stored and as served."""

    namespace: str
    name: str
    version: str = "0.0.1"
    publish: bool = False
    parameters: list[JSON] = field(default_factory=list)
    annotations: list[JSON] = field(default_factory=list)
    limits: JSON = field(default_factory=dict)
    updated: int = 0
    rules: dict[str, RuleLink] = field(default_factory=dict)

    @property
    def path(self) -> EntityPath:
        return EntityPath(self.namespace, None, self.name)

    @property
    def qualified(self) -> str:
        """`guest/name`."""
        return f"{self.namespace}/{self.name}"

    def parameter_values(self) -> JSON:
        """Default parameters as a dict, in list order."""
        return key_value_dict(self.parameters)

    def annotation(self, key: str, default: Any = None) -> Any:
        return key_value(self.annotations, key, default)

    def has_active_rule(self) -> bool:
        return any(link.active for link in self.rules.values())

    def with_rules(self, rules: dict[str, RuleLink]) -> Trigger:
        """A copy with another rules map; the version stays, as in OpenWhisk."""
        return replace(self, rules=dict(rules))

    def to_json(self) -> JSON:
        out: JSON = {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "publish": self.publish,
            "parameters": self.parameters,
            "annotations": self.annotations,
            "limits": self.limits,
            "updated": self.updated,
        }
        if self.rules:
            out["rules"] = {name: link.to_json() for name, link in self.rules.items()}
        return out

    def brief(self) -> JSON:
        """The listing view: what OpenWhisk's triggers view emits (no parameters, no rules)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "publish": self.publish,
            "annotations": self.annotations,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, doc: JSON) -> Trigger:
        """The stored document back as a Trigger (trusted input)."""
        return cls(
            namespace=doc["namespace"],
            name=doc["name"],
            version=doc.get("version", "0.0.1"),
            publish=bool(doc.get("publish", False)),
            parameters=list(doc.get("parameters", [])),
            annotations=list(doc.get("annotations", [])),
            limits=dict(doc.get("limits") or {}),
            updated=int(doc.get("updated", 0)),
            rules={
                name: RuleLink.from_json(link) for name, link in (doc.get("rules") or {}).items()
            },
        )


def _check_feed(annotations: list[JSON]) -> None:
    """OpenWhisk accepts a `feed` annotation only when it names an entity."""
    for a in annotations:
        if a["key"] != FEED_ANNOTATION:
            continue
        value = a.get("value")
        try:
            if not isinstance(value, str):
                raise IllegalName(str(value))
            parse_qualified(value, "_")
        except IllegalName:
            raise InvalidEntity("Feed name is not valid") from None


def build_trigger(
    namespace: str, name: str, body: Any, *, system: SystemLimits, existing: Trigger | None
) -> Trigger:
    """The trigger a PUT body describes; with `existing`, an update that keeps what is omitted.

    The rules map is never taken from the body: only the rules API changes it.
    """
    if not isinstance(body, dict):
        raise InvalidEntity("The request content was malformed: the body must be a JSON object.")
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
    _check_feed(annotations)
    limits = body.get("limits")
    if limits is not None and not isinstance(limits, dict):
        raise InvalidEntity("The limits must be an object.")
    publish = body.get("publish", existing.publish if existing else False)
    if not isinstance(publish, bool):
        raise InvalidEntity("The 'publish' field must be true or false.")
    return Trigger(
        namespace=namespace,
        name=name,
        version=bump_version(existing.version) if existing else "0.0.1",
        publish=publish,
        parameters=params,
        annotations=annotations,
        limits={},  # OpenWhisk's TriggerLimits has no fields
        updated=int(time.time() * 1000),
        rules=dict(existing.rules) if existing else {},
    )
