"""Messages between processes as versioned JSON: what a serialising bus (Kafka) and the
scheduler's fetch endpoint carry.

Every message is `{"v": MESSAGE_VERSION, "type": ..., ...fields}`. A reader refuses a newer
version or an unknown type with `MessageError`, so a rolling upgrade shows up as a precise
error instead of a half-decoded activation. An activation message carries its action without
the code: the container that runs it was initialised from its `ContainerCreation`, which carries
the code of the same revision (OpenWhisk's invokers likewise read code from the store, never
from the activation message).
"""

from __future__ import annotations

import json
from typing import Any

from squall.entities.action import Action
from squall.errors import SquallError
from squall.messages import (
    MESSAGE_VERSION,
    ActivationMessage,
    CacheInvalidation,
    Completion,
    ContainerCreation,
    QueueKey,
)

JSONDict = dict[str, Any]


class MessageError(SquallError):
    """A message that cannot be read: malformed, of an unknown type or of a newer version."""


def encode(message: object) -> bytes:
    return json.dumps(to_json(message), separators=(",", ":")).encode()


def decode(data: bytes | str) -> object:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise MessageError(f"a message is not JSON: {exc}") from exc
    return from_json(doc)


def to_json(message: object) -> JSONDict:
    if isinstance(message, ActivationMessage):
        return {"v": MESSAGE_VERSION, "type": "activation", **_activation(message)}
    if isinstance(message, ContainerCreation):
        return {
            "v": MESSAGE_VERSION,
            "type": "creation",
            "creation_id": message.creation_id,
            "queue": queue_key_json(message.queue),
            "action": message.action.to_json(),
            "scheduler_id": message.scheduler_id,
        }
    if isinstance(message, Completion):
        return {
            "v": MESSAGE_VERSION,
            "type": "completion",
            "activation_id": message.activation_id,
            "controller_id": message.controller_id,
            "record": message.record,
        }
    if isinstance(message, CacheInvalidation):
        return {"v": MESSAGE_VERSION, "type": "invalidation", "path": message.path,
                "name": message.name, "origin": message.origin}  # fmt: skip
    raise MessageError(f"no wire form for {type(message).__name__}")


def from_json(doc: Any) -> object:
    if not isinstance(doc, dict):
        raise MessageError("a message is not a JSON object")
    version, kind = doc.get("v"), doc.get("type")
    if not isinstance(version, int) or version > MESSAGE_VERSION:
        raise MessageError(
            f"message version {version!r} is newer than this process reads ({MESSAGE_VERSION}); "
            "upgrade it to the version of the process that sent it"
        )
    try:
        if kind == "activation":
            return _activation_from(doc)
        if kind == "creation":
            return ContainerCreation(
                doc["creation_id"],
                queue_key_from(doc["queue"]),
                Action.from_json(doc["action"]),
                doc["scheduler_id"],
            )
        if kind == "completion":
            return Completion(doc["activation_id"], doc["controller_id"], doc["record"])
        if kind == "invalidation":
            return CacheInvalidation(str(doc["path"]), str(doc["name"]), str(doc["origin"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"a {kind} message is malformed: {exc!r}") from exc
    raise MessageError(f"unknown message type {kind!r}")


def queue_key_json(key: QueueKey) -> JSONDict:
    return {"ns": key.invocation_namespace, "action": key.action_path, "rev": key.revision}


def queue_key_from(doc: JSONDict) -> QueueKey:
    return QueueKey(str(doc["ns"]), str(doc["action"]), int(doc["rev"]))


def _activation(message: ActivationMessage) -> JSONDict:
    return {
        "activation_id": message.activation_id,
        "transaction_id": message.transaction_id,
        "invocation_namespace": message.invocation_namespace,
        "subject": message.subject,
        "action": message.action.to_json(include_code=False),
        "revision": message.revision,
        "content": message.content,
        "blocking": message.blocking,
        "controller_id": message.controller_id,
        "received_ms": message.received_ms,
        "api_key": message.api_key,
        "cause": message.cause,
        "extra_annotations": message.extra_annotations,
    }


def _activation_from(doc: JSONDict) -> ActivationMessage:
    return ActivationMessage(
        activation_id=doc["activation_id"],
        transaction_id=doc["transaction_id"],
        invocation_namespace=doc["invocation_namespace"],
        subject=doc["subject"],
        action=Action.from_json(doc["action"]),
        revision=int(doc["revision"]),
        content=dict(doc["content"]),
        blocking=bool(doc["blocking"]),
        controller_id=doc["controller_id"],
        received_ms=int(doc["received_ms"]),
        api_key=doc.get("api_key"),
        cause=doc.get("cause"),
        extra_annotations=list(doc.get("extra_annotations") or []),
    )
