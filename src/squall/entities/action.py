"""Actions: validation of the PUT body, updates, and the JSON view OpenWhisk clients expect."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from squall.config import ActionLimitRange, SystemLimits
from squall.entities.names import IllegalName, parse_qualified

JSON = dict[str, Any]
SEQUENCE = "sequence"


NO_COMPONENTS = "No component specified for the sequence."


class InvalidEntity(ValueError):
    """The request body does not describe a valid entity (answered with 400)."""


class EntityTooLarge(ValueError):
    """The code or parameters exceed the system's size limits (answered with 413)."""


@dataclass(slots=True)
class ActionLimits:
    """Per-action limits in OpenWhisk's units."""

    timeout: int
    memory: int
    logs: int
    concurrency: int
    instances: int | None = None

    def to_json(self) -> JSON:
        out: JSON = {
            "timeout": self.timeout,
            "memory": self.memory,
            "logs": self.logs,
            "concurrency": self.concurrency,
        }
        if self.instances is not None:
            out["instances"] = self.instances
        return out


@dataclass(slots=True)
class Action:
    """An action as stored and as served."""

    namespace: str  # the path it lives under: `guest` or `guest/pkg`
    name: str
    kind: str
    code: str
    main: str
    binary: bool
    limits: ActionLimits
    version: str = "0.0.1"
    publish: bool = False
    parameters: list[JSON] = field(default_factory=list)
    annotations: list[JSON] = field(default_factory=list)
    updated: int = 0
    # A sequence's components, fully qualified (`/ns/[pkg/]name`); empty for other kinds.
    components: list[str] = field(default_factory=list)

    @property
    def is_sequence(self) -> bool:
        return self.kind == SEQUENCE

    @property
    def qualified(self) -> str:
        """`guest/pkg/name`, the path annotation's value."""
        return f"{self.namespace}/{self.name}"

    def parameter_values(self) -> JSON:
        """Default parameters as a dict, in list order."""
        return key_value_dict(self.parameters)

    def annotation(self, key: str, default: Any = None) -> Any:
        return key_value(self.annotations, key, default)

    def to_json(self, *, include_code: bool = True) -> JSON:
        exec_: JSON = {"kind": self.kind, "binary": self.binary}
        if self.is_sequence:
            exec_ = {"kind": SEQUENCE, "components": list(self.components)}
        elif include_code:
            exec_["code"] = self.code
        if not self.is_sequence and (self.main != "main" or include_code):
            exec_["main"] = self.main
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "exec": exec_,
            "annotations": self.annotations,
            "parameters": self.parameters,
            "limits": self.limits.to_json(),
            "publish": self.publish,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, doc: JSON) -> Action:
        """The stored document back as an Action (trusted input)."""
        exec_ = doc["exec"]
        return cls(
            namespace=doc["namespace"],
            name=doc["name"],
            kind=exec_["kind"],
            code=exec_.get("code", ""),
            main=exec_.get("main", "main"),
            binary=bool(exec_.get("binary", False)),
            limits=ActionLimits(**doc["limits"]),
            version=doc.get("version", "0.0.1"),
            publish=bool(doc.get("publish", False)),
            parameters=list(doc.get("parameters", [])),
            annotations=list(doc.get("annotations", [])),
            updated=int(doc.get("updated", 0)),
            components=list(exec_.get("components", [])),
        )


def key_value_dict(items: list[JSON]) -> JSON:
    """OpenWhisk's `[{key, value}]` list as a dict; a later key wins, as in OpenWhisk."""
    return {item["key"]: item.get("value") for item in items}


def key_value(items: list[JSON], key: str, default: Any = None) -> Any:
    """The value of `key` in a `[{key, value}]` list."""
    for item in items:
        if item.get("key") == key:
            return item.get("value")
    return default


def bump_version(version: str) -> str:
    """OpenWhisk bumps the patch number on every update."""
    try:
        major, minor, patch = (int(p) for p in version.split("."))
    except ValueError:
        return "0.0.1"
    return f"{major}.{minor}.{patch + 1}"


def key_value_list(value: Any, what: str) -> list[JSON]:
    """Validate OpenWhisk's `[{key, value}]` parameter and annotation lists."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidEntity(f"The {what} must be an array of {{key, value}} objects.")
    out: list[JSON] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise InvalidEntity(f"Each of the {what} must be an object with a string 'key'.")
        entry: JSON = {"key": item["key"], "value": item.get("value")}
        if item.get("init") is True:
            entry["init"] = True
        out.append(entry)
    return out


def _check_range(label: str, unit: str, value: Any, rng: ActionLimitRange) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEntity(f"{label} must be an integer number of {unit}.")
    if value < rng.minimum:
        raise InvalidEntity(
            f"{label} {value} {unit} below allowed threshold of {rng.minimum} {unit}."
        )
    if value > rng.maximum:
        raise InvalidEntity(
            f"{label} {value} {unit} exceeds allowed threshold of {rng.maximum} {unit}."
        )
    return value


def parse_limits(body: Any, system: SystemLimits, base: ActionLimits | None) -> ActionLimits:
    """Validate `limits` from a PUT body; unspecified ones keep `base` or the system default."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidEntity("The limits must be an object.")
    current = base or ActionLimits(
        system.timeout_ms.default,
        system.memory_mb.default,
        system.logs_mb.default,
        system.concurrency.default,
    )
    limits = ActionLimits(
        current.timeout, current.memory, current.logs, current.concurrency, current.instances
    )
    if "timeout" in body:
        limits.timeout = _check_range("Timeout", "milliseconds", body["timeout"], system.timeout_ms)
    if "memory" in body:
        limits.memory = _check_range("Memory", "MB", body["memory"], system.memory_mb)
    if "logs" in body:
        limits.logs = _check_range("Logs", "MB", body["logs"], system.logs_mb)
    if "concurrency" in body:
        limits.concurrency = _check_range(
            "Concurrency", "activations", body["concurrency"], system.concurrency
        )
    if "instances" in body:
        rng = ActionLimitRange(0, system.concurrent_invocations, system.concurrent_invocations)
        limits.instances = _check_range("Instances", "containers", body["instances"], rng)
    return limits


def parse_components(value: Any, namespace: str) -> list[str]:
    """A sequence's `components` as fully qualified names (`_` is the owner's namespace).

    Whether they exist, and the sequence's length, are checked by the controller, which has
    the store (controller/sequences.py).
    """
    if not isinstance(value, list) or not value:
        raise InvalidEntity(NO_COMPONENTS)
    owner = namespace.split("/", 1)[0]
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidEntity("Each sequence component must be a fully qualified action name.")
        try:
            out.append(str(parse_qualified(item, owner)))
        except IllegalName as exc:
            raise InvalidEntity(str(exc)) from exc
    return out


def _parse_exec(
    body: Any, kinds: frozenset[str], system: SystemLimits
) -> tuple[str, str, str, bool]:
    if not isinstance(body, dict):
        raise InvalidEntity("The 'exec' field is missing or not an object.")
    kind = body.get("kind")
    if not isinstance(kind, str):
        raise InvalidEntity("The 'exec' field must name a 'kind'.")
    if kind == SEQUENCE:
        return SEQUENCE, "", "main", False
    if kind not in kinds and f"{kind}:default" in kinds:
        kind = f"{kind}:default"  # `python`, `nodejs`: the family's default kind
    if kind not in kinds:
        raise InvalidEntity(f"kind '{kind}' not in Set({', '.join(sorted(kinds))})")
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise InvalidEntity("The 'exec' field of this kind requires non-empty 'code'.")
    if len(code) > system.code_bytes:
        raise EntityTooLarge(
            f"The action code is larger than allowed: {len(code)} > {system.code_bytes} bytes."
        )
    main = body.get("main", "main")
    if not isinstance(main, str) or not main.isidentifier():
        raise InvalidEntity("The entry point 'main' must be a function name.")
    binary = bool(body.get("binary", False)) or _looks_like_zip(code)
    return kind, code, main, binary


def _looks_like_zip(code: str) -> bool:
    # wsk sends zip files base64-encoded without always setting binary; "UEsDB" is "PK\x03\x04".
    if not code.startswith("UEsDB"):
        return False
    try:
        base64.b64decode(code[:64] + "=" * (-len(code[:64]) % 4), validate=False)
    except ValueError:
        return False
    return True


def _parameters_size(params: list[JSON]) -> int:
    import orjson

    return len(orjson.dumps(params))


def build_action(
    namespace: str,
    name: str,
    body: Any,
    *,
    kinds: frozenset[str],
    system: SystemLimits,
    existing: Action | None,
) -> Action:
    """The action a PUT body describes; with `existing`, an update that keeps what is omitted."""
    if not isinstance(body, dict):
        raise InvalidEntity("The request content was malformed: the body must be a JSON object.")
    components = existing.components if existing else []
    if existing is None or "exec" in body:
        kind, code, main, binary = _parse_exec(body.get("exec"), kinds, system)
        if kind == SEQUENCE:
            components = parse_components(body["exec"].get("components"), namespace)
    else:
        kind, code, main, binary = existing.kind, existing.code, existing.main, existing.binary
    limits = parse_limits(body.get("limits"), system, existing.limits if existing else None)
    params = (
        key_value_list(body["parameters"], "parameters")
        if "parameters" in body
        else (existing.parameters if existing else [])
    )
    if _parameters_size(params) > system.parameters_bytes:
        raise EntityTooLarge(
            f"The parameters are larger than allowed: {_parameters_size(params)} > "
            f"{system.parameters_bytes} bytes."
        )
    annotations = (
        key_value_list(body["annotations"], "annotations")
        if "annotations" in body
        else (existing.annotations if existing else [])
    )
    annotations = [a for a in annotations if a["key"] != "exec"] + [{"key": "exec", "value": kind}]
    publish = body.get("publish", existing.publish if existing else False)
    return Action(
        namespace=namespace,
        name=name,
        kind=kind,
        code=code,
        main=main,
        binary=binary,
        limits=limits,
        version=bump_version(existing.version) if existing else "0.0.1",
        publish=bool(publish),
        parameters=params,
        annotations=annotations,
        updated=int(time.time() * 1000),
        components=components if kind == SEQUENCE else [],
    )
