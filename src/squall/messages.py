"""What travels on the message bus between roles.

The in-process bus hands these objects over as they are; a serialising bus (Kafka) encodes
them as versioned JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squall.entities.action import Action
from squall.entities.activation import ActivationResponse, build_record

MESSAGE_VERSION = 2

SCHEDULER_TOPIC = "scheduler0"
INVOKER_TOPIC = "invoker0"
# Every controller (and every scheduler's fire path) forgets its cached copy of a changed action
# when another process writes it: OpenWhisk's `cacheInvalidation` topic.
CACHE_TOPIC = "cache-invalidation"


def completed_topic(controller_id: str) -> str:
    """Completions go back to the controller that accepted the request."""
    return f"completed-{controller_id}"


@dataclass(slots=True, frozen=True)
class QueueKey:
    """One scheduler queue: an action revision invoked from one namespace."""

    invocation_namespace: str
    action_path: str  # `guest/pkg/name`
    revision: int


@dataclass(slots=True)
class ActivationMessage:
    """An accepted invocation on its way to a container."""

    activation_id: str
    transaction_id: str
    invocation_namespace: str
    subject: str
    action: Action
    revision: int
    content: dict[str, Any]
    blocking: bool
    controller_id: str
    received_ms: int
    api_key: str | None = None
    cause: str | None = None
    # Annotations the caller adds to the record (e.g. causedBy for sequence components).
    extra_annotations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def queue_key(self) -> QueueKey:
        return QueueKey(self.invocation_namespace, self.action.qualified, self.revision)

    def record(
        self,
        *,
        start: int,
        end: int,
        response: ActivationResponse,
        logs: list[str],
        annotations: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """This activation's record; the path, kind and limits annotations are added here."""
        action = self.action
        return build_record(
            namespace=self.invocation_namespace,
            name=action.name,
            version=action.version,
            subject=self.subject,
            activation_id=self.activation_id,
            start=start,
            end=end,
            response=response,
            logs=logs,
            annotations=[
                {"key": "path", "value": action.qualified},
                {"key": "kind", "value": action.kind},
                {"key": "limits", "value": action.limits.to_json()},
                *annotations,
                *self.extra_annotations,
            ],
            cause=self.cause,
            publish=action.publish,
        )


@dataclass(slots=True)
class ContainerCreation:
    """Scheduler to invoker: start a container that will pull from `queue`."""

    creation_id: str
    queue: QueueKey
    action: Action
    scheduler_id: str


@dataclass(slots=True)
class Completion:
    """Invoker (or scheduler, for activations it fails) to controller: the finished record."""

    activation_id: str
    controller_id: str
    record: dict[str, Any]


@dataclass(slots=True)
class CacheInvalidation:
    """An entity (an action, or a trigger: its rules map changes with its rules too) changed
    or went away: forget cached copies of `path`/`name` (every name in the package `path` when
    `name` is empty; names are unique per path across collections). `origin` is the writer,
    which already forgot."""

    path: str
    name: str
    origin: str
