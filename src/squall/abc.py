"""The seams of Squall: one interface per external dependency, and the data that crosses them.

Every role (controller, scheduler, invoker) imports only these interfaces. Each has an embedded
implementation shipped in the package (SQLite, in-process bus and coordination, process
sandboxes) and, later, real backends chosen by name in configuration.

Documents crossing the store seams are plain JSON-able dicts in OpenWhisk's shapes, so every
backend stays a thin adapter and `squall store copy` can move them verbatim.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from squall.errors import ConflictError

if TYPE_CHECKING:
    from squall.messages import ActivationMessage, QueueKey

JSONDict = dict[str, Any]
RecordPage = list[JSONDict]  # a page of activation records (`list` is a method name below)

# ---------------------------------------------------------------------------------------------
# Entity store: namespaces' keys and every named entity (actions, packages, triggers, rules).
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class StoredEntity:
    """One entity document as the store keeps it.

    `namespace` is the entity's path (`guest` or `guest/pkg`); names are unique per path across
    every collection, as OpenWhisk's document ids are. `revision` grows by one per write and is
    what optimistic concurrency compares.
    """

    collection: str
    namespace: str
    name: str
    revision: int
    doc: JSONDict


@dataclass(slots=True, frozen=True)
class StoredText:
    """One entity document as its JSON text, not decoded (`EntityStore.scan_text`)."""

    collection: str
    namespace: str
    name: str
    revision: int
    text: str


@dataclass(slots=True, frozen=True)
class EntityWrite:
    """One write of `EntityStore.put_many`: the arguments of one `put`."""

    collection: str
    namespace: str
    name: str
    doc: JSONDict
    expected_revision: int | None

    def replaced(self) -> StoredEntity:
        """The entity as this write leaves it when it replaces (a backend that wrote many in
        one statement builds each result with this)."""
        assert self.expected_revision is not None, "a create has no replaced entity"
        return StoredEntity(
            self.collection, self.namespace, self.name, self.expected_revision + 1, self.doc
        )


@dataclass(slots=True, frozen=True)
class SubjectRecord:
    """A namespace's credentials. Only a hash of the key is ever stored."""

    namespace: str
    subject: str
    uuid: str
    key_hash: str
    limits: JSONDict = field(default_factory=dict)


class EntityStore(abc.ABC):
    """Namespaces' credentials and every named entity."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections and bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource; pending writes are flushed first."""

    @abc.abstractmethod
    async def get(self, collection: str, namespace: str, name: str) -> StoredEntity | None:
        """The entity, or None when there is none of that collection under that name."""

    @abc.abstractmethod
    async def put(
        self,
        collection: str,
        namespace: str,
        name: str,
        doc: JSONDict,
        expected_revision: int | None,
    ) -> StoredEntity:
        """Create (`expected_revision` None) or replace (the current revision) an entity.

        Raises ConflictError when the name is taken (in any collection) on create, or when the
        stored revision is not `expected_revision` on replace.
        """

    async def put_many(self, writes: Sequence[EntityWrite]) -> list[StoredEntity | ConflictError]:
        """Many `put`s at once, in one transaction where the backend has them.

        A conflict fails only its own write (its slot holds the ConflictError); any other error
        fails the whole call. The default calls `put` per write; backends override it because
        state written on every alarm fire arrives a thousand times a second.
        """
        results: list[StoredEntity | ConflictError] = []
        for w in writes:
            try:
                stored = await self.put(
                    w.collection, w.namespace, w.name, w.doc, w.expected_revision
                )
            except ConflictError as exc:
                results.append(exc)
            else:
                results.append(stored)
        return results

    @abc.abstractmethod
    async def delete(
        self, collection: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> bool:
        """Delete; False when absent. ConflictError when `expected_revision` does not match."""

    @abc.abstractmethod
    async def list(
        self,
        collection: str,
        namespace: str,
        *,
        skip: int = 0,
        limit: int = 30,
        prefix_match: bool = False,
    ) -> list[StoredEntity]:
        """Entities of a collection under a path, newest update first.

        With `prefix_match`, paths below `namespace` (`ns/pkg`) are included too.
        """

    async def scan(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredEntity]]:
        """Every entity of a collection under a path, a page at a time, for loading a whole
        collection at start without holding all of it decoded at once.

        The default pages through `list`; backends override it with a keyset scan (OFFSET
        paging re-reads every skipped row). Entities written during a scan may be missed.
        """
        skip = 0
        while True:  # bounded: each page is non-empty and the store is finite
            batch = await self.list(
                collection, namespace, skip=skip, limit=page, prefix_match=prefix_match
            )
            if batch:
                yield batch
            if len(batch) < page:
                return
            skip += len(batch)

    async def scan_text(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredText]]:
        """`scan` with each document as its JSON text: for a reader that needs a few fields of
        every document now and the rest of some later (the alarm service at start decodes
        100,000 alarms' schedules, not their whole documents).

        The default encodes what `scan` decoded; backends override it to skip both."""
        async for batch in self.scan(collection, namespace, prefix_match=prefix_match, page=page):
            yield [
                StoredText(e.collection, e.namespace, e.name, e.revision, _text(e.doc))
                for e in batch
            ]

    @abc.abstractmethod
    async def count(self, collection: str, namespace: str, *, prefix_match: bool = False) -> int:
        """How many entities `list` would return without paging."""

    @abc.abstractmethod
    async def get_subject(self, uuid: str) -> SubjectRecord | None:
        """The credentials whose key uuid is `uuid`."""

    @abc.abstractmethod
    async def get_subject_by_namespace(self, namespace: str) -> SubjectRecord | None:
        """The credentials owning `namespace`."""

    @abc.abstractmethod
    async def put_subject(self, record: SubjectRecord) -> None:
        """Create or replace a namespace's credentials."""

    @abc.abstractmethod
    async def delete_subject(self, namespace: str) -> bool:
        """Remove a namespace's credentials; False when absent."""

    # -- export and import, for `squall store copy` ----------------------------------------------

    @abc.abstractmethod
    def iter_entities(self) -> AsyncIterator[StoredEntity]:
        """Every entity of every collection, oldest write first."""

    @abc.abstractmethod
    def iter_subjects(self) -> AsyncIterator[SubjectRecord]:
        """Every namespace's credentials."""

    @abc.abstractmethod
    async def restore(self, entity: StoredEntity) -> StoredEntity:
        """Create an entity at its stored revision; ConflictError when the name is taken."""


# ---------------------------------------------------------------------------------------------
# Activation store: records, logs and duration statistics.
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ActivationQuery:
    """A listing of activations, OpenWhisk's `GET /activations` parameters."""

    namespace: str
    name: str | None = None  # `action` or `pkg/action`, matched against the record's path
    skip: int = 0
    limit: int = 30
    since: int | None = None  # epoch ms, inclusive
    upto: int | None = None  # epoch ms, inclusive


@dataclass(slots=True, frozen=True)
class DurationStats:
    """An action's durations over a window, for the scheduler's container decisions."""

    count: int
    average_ms: float
    p50_ms: float
    p99_ms: float


class RecordJournal(Protocol):
    """Told of every record an activation store accepts and writes (stores/journal.py)."""

    def accepted_record(self, record: JSONDict) -> None: ...

    def written(self, activation_ids: Iterable[str]) -> None: ...


class ActivationStore(abc.ABC):
    """Activation records in OpenWhisk's stored shape (see entities.activation)."""

    # Set by the platform before start: the store reports each record it accepts and, once
    # durable, each it wrote, so a crash in between is noticed at the next start.
    journal: RecordJournal | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections and bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush every record handed to `store` and release resources."""

    @abc.abstractmethod
    def store(self, record: JSONDict) -> None:
        """Accept a record for writing without waiting: writes are batched off the hot path.

        A record handed here is visible to `get` at once and is durable after `flush` or a
        clean `close`.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Write every accepted record."""

    @abc.abstractmethod
    async def get(self, namespace: str, activation_id: str) -> JSONDict | None:
        """One record of `namespace`, or None."""

    @abc.abstractmethod
    async def list(self, query: ActivationQuery) -> list[JSONDict]:
        """Records matching the query, newest start first."""

    @abc.abstractmethod
    async def count(self, query: ActivationQuery) -> int:
        """How many records match the query, ignoring skip and limit."""

    @abc.abstractmethod
    async def duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None:
        """Durations of the action at `path` (`ns/[pkg/]name`) since `since_ms`; None if none."""

    @abc.abstractmethod
    async def purge_before(self, before_ms: int) -> int:
        """Delete the records that started before `before_ms` (retention); how many went."""

    @abc.abstractmethod
    def iter_records(self, page: int = 1000) -> AsyncIterator[RecordPage]:
        """Every record, in pages, oldest start first (for `squall store copy`)."""


# ---------------------------------------------------------------------------------------------
# Message bus: activations to schedulers, container commands to invokers, completions back.
# ---------------------------------------------------------------------------------------------


MessageHandler = Callable[[object], None]
PrefixWatcher = Callable[[Mapping[str, str]], None]


class Subscription(abc.ABC):
    """A consumer of one topic in one consumer group."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consuming; no handler call starts after this returns."""


class MessageBus(abc.ABC):
    """Topics with consumer groups. The in-process bus does no serialisation.

    Delivery is push: the bus calls a subscriber's handler once per message, never inside
    `publish` itself, so a publisher never runs its subscribers' code.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (and create topics where the backend needs it)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; messages already published are delivered or kept by the backend."""

    @abc.abstractmethod
    def publish(self, topic: str, message: object) -> None:
        """Send without waiting for delivery."""

    @abc.abstractmethod
    def subscribe(self, topic: str, group: str, handler: MessageHandler) -> Subscription:
        """Consume `topic` as a member of `group`: each message goes to one member of a group.

        Handlers must not block: they hand work to the event loop and return.
        """

    def problem(self) -> str | None:
        """Why the bus is not usable now (for readiness): the reason and the settings to
        check; None when it is. A bus with a problem keeps retrying by itself."""
        return None


# ---------------------------------------------------------------------------------------------
# Coordination: membership, leases and ownership (etcd in a cluster).
# ---------------------------------------------------------------------------------------------


class Coordinator(abc.ABC):
    """A small key-value space with leases, the primitives etcd offers."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Revoke this process's lease and disconnect."""

    @abc.abstractmethod
    async def put(self, key: str, value: str, *, leased: bool = True) -> None:
        """Write a key, bound to this process's lease unless `leased` is False."""

    @abc.abstractmethod
    async def put_if_absent(self, key: str, value: str, *, leased: bool = True) -> bool:
        """Write only if the key does not exist; True when written (elections use this)."""

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """A key's value."""

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> Mapping[str, str]:
        """Every key under a prefix."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove a key."""

    @abc.abstractmethod
    def watch_prefix(self, prefix: str, on_change: PrefixWatcher) -> Subscription:
        """Call `on_change` with every key under `prefix` (a full snapshot, not a delta), once
        now and again after every change, from the event loop. Membership, ownership and
        throttling flags are read this way, so no request waits on a round trip to etcd.
        After a lost connection the watcher gets a fresh snapshot once it is back."""

    @property
    def lease_valid(self) -> bool:
        """Whether this process can be sure its lease is still alive: the last keepalive was
        acknowledged less than a TTL ago. An owner that cannot be sure must stop acting as one
        (fencing): its keys may already be gone and another member may own its work."""
        return True

    def problem(self) -> str | None:
        """Why coordination is not usable now (for readiness), None when it is."""
        return None


# ---------------------------------------------------------------------------------------------
# Sandbox: where action code runs.
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class InitPayload:
    """The runtime protocol's `/init` value, plus the limits the sandbox narrows to at init.

    A prewarmed stem cell is created with the largest memory limit; `memory_mb` and
    `log_limit_bytes` lower it to the action's own, so one stem cell fits every action.
    """

    name: str
    main: str
    code: str
    binary: bool
    env: dict[str, str]
    memory_mb: int | None = None
    log_limit_bytes: int | None = None


@dataclass(slots=True)
class RunPayload:
    """The runtime protocol's `/run` body: `value` plus the context exported as `__OW_*`."""

    value: JSONDict
    context: dict[str, str]  # namespace, action_name, activation_id, deadline, api_key, ...


@dataclass(slots=True)
class SandboxOutcome:
    """What one `/init` or `/run` produced, before the invoker interprets it.

    `response` is the raw JSON text the action returned (None when it returned nothing).
    `failure` is set when the sandbox itself ended the call: "timeout", "memory", "crashed: ..."
    or an init/run error message; the sandbox must then be discarded if `fatal`.
    """

    response: bytes | None
    logs: list[str]
    failure: str | None = None
    fatal: bool = False
    timed_out: bool = False


@dataclass(slots=True, frozen=True)
class SandboxSpec:
    """What a sandbox is created for; a prewarmed stem cell knows only kind and memory."""

    kind: str
    memory_mb: int
    log_limit_bytes: int


class Sandbox(abc.ABC):
    """One container: initialised once, then runs one activation at a time."""

    @property
    @abc.abstractmethod
    def sandbox_id(self) -> str:
        """Unique id, used in logs and metrics."""

    @abc.abstractmethod
    async def init(self, payload: InitPayload, timeout_s: float) -> SandboxOutcome:
        """Load the action's code."""

    @abc.abstractmethod
    async def run(self, payload: RunPayload, timeout_s: float) -> SandboxOutcome:
        """Run one activation."""

    @abc.abstractmethod
    async def destroy(self) -> None:
        """Kill the sandbox and release everything it held."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Unique memory (USS) the sandbox holds now, 0 if unknown."""


class SandboxFactory(abc.ABC):
    """Creates sandboxes for the kinds it supports."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Prepare (start the zygote, check isolation) before the first create."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Destroy every sandbox it created and stop helper processes."""

    @abc.abstractmethod
    def kinds(self) -> Sequence[str]:
        """Runtime kinds this factory can run."""

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> Sandbox:
        """A fresh, uninitialised sandbox."""


# ---------------------------------------------------------------------------------------------
# Scheduler endpoint: what an invoker's containers call to pull work (OpenWhisk's
# FetchActivation). The scheduler serves it in-process; in a cluster, over the network.
# ---------------------------------------------------------------------------------------------


class QueueEndpoint(Protocol):
    """The scheduler as seen by a container pulling from one queue."""

    async def fetch(
        self, key: QueueKey, container_id: str, last_duration_ms: float | None, timeout_s: float
    ) -> ActivationMessage | None:
        """The next activation, None when none came in time; raises QueueGone to stop."""

    def container_started(self, key: QueueKey, creation_id: str, container_id: str) -> None:
        """A created container is ready and pulling."""

    def container_stopped(
        self, key: QueueKey, container_id: str, last_received: str | None
    ) -> None:
        """A container went away (idle, evicted, crashed). `last_received` is the id of the last
        activation it was handed (None: none): one handed over after that never reached it."""

    def creation_failed(self, key: QueueKey, creation_id: str, error: str, developer: bool) -> None:
        """A container could not be created."""


# ---------------------------------------------------------------------------------------------
# Alarm admin: the feed lifecycle of alarms as the controller's feed actions see it. In one
# process the AlarmService itself (`squall.alarms.admin.LocalAlarms`); in a cluster the scheduler
# that owns the alarm's shard, over its internal endpoint (`squall.alarms.remote.RemoteAlarms`).
# ---------------------------------------------------------------------------------------------


class AlarmAdmin(Protocol):
    """Create, read, change and delete the alarm of a trigger.

    Views are the feed READ body (`AlarmService.read_view`). Errors: NotFoundError (the
    trigger has no alarm), ConflictError (create: it has one already), AlarmValidationError
    (a ValueError whose message is the user-facing text), DependencyUnavailable (the store, or
    in a cluster every owner of the alarm's shard, cannot be reached now; retry).
    """

    async def create(
        self, namespace: str, trigger: str, kind: str, params: Mapping[str, Any]
    ) -> JSONDict:
        """A new alarm of `kind` (cron, interval, once) from the feed's parameters."""

    async def read(self, namespace: str, trigger: str) -> JSONDict | None:
        """The alarm's view, None when the trigger has none."""

    async def update(self, namespace: str, trigger: str, params: Mapping[str, Any]) -> JSONDict:
        """A feed UPDATE; re-enables a disabled alarm."""

    async def delete(self, namespace: str, trigger: str) -> bool:
        """Remove the alarm; False when there was none."""

    async def pause(self, namespace: str, trigger: str) -> JSONDict:
        """Hold the alarm until `resume`."""

    async def resume(self, namespace: str, trigger: str) -> JSONDict:
        """Undo `pause`."""

    async def list(self, namespace: str) -> builtins.list[JSONDict]:
        """Every alarm of a namespace, by trigger name."""


def _text(doc: JSONDict) -> str:
    """A document as JSON text; a str, as bytes from orjson keep its whole output buffer."""
    return orjson.dumps(doc).decode()
