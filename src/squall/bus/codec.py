"""Messages between processes as versioned JSON: what a serialising bus (Kafka) and the
scheduler's fetch endpoint carry.

Every message is `{"v": MESSAGE_VERSION, "type": ..., ...fields}`; a Kafka record holds one
message or a `bundle` of several (version 2, see `bundles`). A reader refuses a newer
version or an unknown type with `MessageError`, so a rolling upgrade shows up as a precise
error instead of a half-decoded activation. An activation message carries its action without
the code: the container that runs it was initialised from its `ContainerCreation`, which carries
the code of the same revision (OpenWhisk's invokers likewise read code from the store, never
from the activation message).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

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


# A bundle's size bound: well under Kafka's default `message.max.bytes` (1 MB), and one
# message that is larger on its own is sent alone.
BUNDLE_BYTES = 256 * 1024


def encode(message: object) -> bytes:
    return orjson.dumps(to_json(message))


def bundles(messages: Iterable[object]) -> Iterator[bytes]:
    """Messages for one topic as few records: each record a single message, or a `bundle`
    (`{"v", "type": "bundle", "messages": [...]}`) of several, of at most BUNDLE_BYTES.

    Why: a message broker's work goes by the record batch more than by the byte (Tansu's
    memory storage slows down with the number of batches it holds), and messages published
    within one turn of the event loop (requests that arrived together) can share one record
    without waiting for any timer, unlike a producer's `linger.ms`.
    """
    parts: list[bytes] = []
    size = 0
    for message in messages:
        part = encode(message)
        if parts and size + len(part) > BUNDLE_BYTES:
            yield _record(parts)
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield _record(parts)


def _record(parts: list[bytes]) -> bytes:
    if len(parts) == 1:
        return parts[0]
    head = b'{"v":%d,"type":"bundle","messages":[' % MESSAGE_VERSION
    return head + b",".join(parts) + b"]}"


def decode(data: bytes | str) -> object:
    return from_json(_load(data))


def decode_all(data: bytes | str) -> list[object]:
    """The messages of one record: a bundle's, or the one it is."""
    doc = _load(data)
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        _check_version(doc.get("v"))
        messages = doc.get("messages")
        if not isinstance(messages, list):
            raise MessageError("a bundle without its list of messages")
        return [from_json(item) for item in messages]
    return [from_json(doc)]


def _load(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"a message is not JSON: {exc}") from exc


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
    kind = doc.get("type")
    _check_version(doc.get("v"))
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


def _check_version(version: object) -> None:
    if not isinstance(version, int) or version > MESSAGE_VERSION:
        raise MessageError(
            f"message version {version!r} is newer than this process reads ({MESSAGE_VERSION}); "
            "upgrade it to the version of the process that sent it"
        )


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
