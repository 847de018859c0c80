"""Rules: validation of the PUT and status bodies, and the JSON view OpenWhisk clients expect.

A rule names a trigger and an action. Its status is not kept on the rule: as in OpenWhisk, the
trigger's rules map is the one place that says whether the rule is active (firing reads only
the trigger), and the API computes a rule's status from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from squall.entities.action import InvalidEntity, bump_version, key_value_list
from squall.entities.names import EntityPath, IllegalName, parse_qualified
from squall.entities.trigger import ACTIVE, INACTIVE, RULE_STATUSES

JSON = dict[str, Any]

MISSING_REFERENCES = "rule requires a valid trigger and a valid action"
BAD_STATUS = "status must be 'active' or 'inactive'"


@dataclass(slots=True)
class Rule:
    """A rule as stored and as served (`status` is filled in from the trigger)."""

    namespace: str
    name: str
    trigger: EntityPath
    action: EntityPath
    version: str = "0.0.1"
    publish: bool = False
    annotations: list[JSON] = field(default_factory=list)
    updated: int = 0
    status: str = INACTIVE

    @property
    def path(self) -> EntityPath:
        return EntityPath(self.namespace, None, self.name)

    @property
    def qualified(self) -> str:
        """`guest/name`: the key of this rule in its trigger's rules map."""
        return f"{self.namespace}/{self.name}"

    def to_doc(self) -> JSON:
        """The stored document: everything but the status, which lives on the trigger."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "publish": self.publish,
            "annotations": self.annotations,
            "trigger": self.trigger.to_json(),
            "action": self.action.to_json(),
            "updated": self.updated,
        }

    def to_json(self) -> JSON:
        """OpenWhisk's WhiskRuleResponse."""
        return {**self.to_doc(), "status": self.status}

    @classmethod
    def from_json(cls, doc: JSON) -> Rule:
        """The stored document back as a Rule (trusted input); status starts inactive."""
        return cls(
            namespace=doc["namespace"],
            name=doc["name"],
            trigger=EntityPath.from_json(doc["trigger"]),
            action=EntityPath.from_json(doc["action"]),
            version=doc.get("version", "0.0.1"),
            publish=bool(doc.get("publish", False)),
            annotations=list(doc.get("annotations", [])),
            updated=int(doc.get("updated", 0)),
        )


def parse_reference(value: Any, namespace: str, what: str) -> EntityPath:
    """A trigger or action named in a rule body.

    Accepts `/ns/name`, `/_/name` (the caller's namespace, as the JS client sends), `name`,
    `pkg/name` and `/ns/pkg/name` (actions only), or the `{path, name}` object form.
    """
    try:
        if isinstance(value, str):
            path = parse_qualified(value, namespace)
        elif isinstance(value, dict):
            path = EntityPath.from_json(value)
            if path.namespace == "_":
                path = EntityPath(namespace, path.package, path.name)
        else:
            raise IllegalName(f"The {what} must be a name.")
    except IllegalName as exc:
        raise InvalidEntity(f"The {what} name is not valid: {exc}") from None
    if what == "trigger" and path.package is not None:
        raise InvalidEntity(f"The trigger name '{value}' is not valid: triggers have no package.")
    return path


def build_rule(namespace: str, name: str, body: Any, *, existing: Rule | None) -> Rule:
    """The rule a PUT body describes; with `existing`, an update that keeps what is omitted."""
    if not isinstance(body, dict):
        raise InvalidEntity("The request content was malformed: the body must be a JSON object.")
    trigger = body.get("trigger")
    action = body.get("action")
    if existing is None and (trigger is None or action is None):
        raise InvalidEntity(MISSING_REFERENCES)
    annotations = (
        key_value_list(body["annotations"], "annotations")
        if "annotations" in body
        else (existing.annotations if existing else [])
    )
    publish = body.get("publish", existing.publish if existing else False)
    if not isinstance(publish, bool):
        raise InvalidEntity("The 'publish' field must be true or false.")
    return Rule(
        namespace=namespace,
        name=name,
        trigger=(
            parse_reference(trigger, namespace, "trigger")
            if trigger is not None
            else _kept(existing, "trigger")
        ),
        action=(
            parse_reference(action, namespace, "action")
            if action is not None
            else _kept(existing, "action")
        ),
        version=bump_version(existing.version) if existing else "0.0.1",
        publish=publish,
        annotations=annotations,
        updated=int(time.time() * 1000),
        status=ACTIVE if existing is None else existing.status,
    )


def _kept(existing: Rule | None, what: str) -> EntityPath:
    if existing is None:  # build_rule checked this already; kept for the type checker
        raise InvalidEntity(MISSING_REFERENCES)
    return existing.trigger if what == "trigger" else existing.action


def parse_status_request(body: Any) -> str:
    """`{"status": "active"}` or `{"status": "inactive"}` from `POST /rules/{name}`."""
    status = body.get("status") if isinstance(body, dict) else None
    if status not in RULE_STATUSES:
        raise InvalidEntity(BAD_STATUS)
    return str(status)
