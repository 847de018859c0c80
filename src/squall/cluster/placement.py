"""Who does what in a cluster: membership read from the coordinator, and the ownership that
follows from it.

Each process registers one leased key per role it runs (`members/{role}/{id}`); the keys vanish
with the process's lease. Every process watches the members and derives ownership from the same
view with rendezvous (highest random weight) hashing: an action queue belongs to one live
scheduler, and so does each alarm shard. When a scheduler dies or joins, only the queues and
shards that hashed to it move. No election round trip sits on the invoke path: the view is
local, and etcd's watch keeps it current within milliseconds.

A member that cannot be sure of its lease (`Coordinator.lease_valid`) must not act as an owner:
the scheduler and the alarm service check it before dispatching or firing (fencing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from squall.abc import Coordinator, Subscription
from squall.alarms.shards import alarm_shard
from squall.messages import QueueKey

log = logging.getLogger("squall.cluster")

Role = Literal["controller", "scheduler", "invoker"]
ROLES: tuple[Role, ...] = ("controller", "scheduler", "invoker")
ALL_ROLES: frozenset[Role] = frozenset(ROLES)  # standalone: every role in one process
MEMBERS = "members/"


def member_key(role: Role, member_id: str) -> str:
    return f"{MEMBERS}{role}/{member_id}"


def default_member_id(role: Role) -> str:
    """`{role}-{hostname}`: a pod's name is unique in its StatefulSet or Deployment."""
    host = socket.gethostname().split(".")[0] or "local"
    return f"{role}-{host}"


@dataclass(frozen=True, slots=True)
class Member:
    """One role of one process, as the others see it."""

    role: Role
    id: str
    url: str = ""
    free_mb: int | None = None  # invokers: memory not reserved by containers
    containers: int | None = None

    def to_value(self) -> str:
        body: dict[str, object] = {"id": self.id, "url": self.url}
        if self.free_mb is not None:
            body["free_mb"] = self.free_mb
        if self.containers is not None:
            body["containers"] = self.containers
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_value(cls, role: Role, member_id: str, value: str) -> Member:
        try:
            body = json.loads(value)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        free = body.get("free_mb")
        containers = body.get("containers")
        return cls(
            role,
            member_id,
            str(body.get("url", "")),
            int(free) if isinstance(free, int | float) else None,
            int(containers) if isinstance(containers, int | float) else None,
        )


def rendezvous(key: str, candidates: list[str]) -> str | None:
    """The candidate with the highest hash of (candidate, key): stable, and when a candidate
    leaves only its keys move."""
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    return max(candidates, key=lambda c: hashlib.blake2b(f"{c}\0{key}".encode(), digest_size=8)
               .digest())  # fmt: skip


MembersChanged = Callable[[Role, set[str], set[str]], None]  # role, joined, left


@dataclass
class Placement:
    """The membership view of one process and the ownership decisions drawn from it."""

    coordinator: Coordinator
    alarm_shards: int = 64
    members: dict[Role, dict[str, Member]] = field(
        default_factory=lambda: {role: {} for role in ROLES}
    )
    _listeners: list[MembersChanged] = field(default_factory=list)
    _watch: Subscription | None = None
    _sorted: dict[Role, list[str]] = field(default_factory=lambda: {r: [] for r in ROLES})
    _invoker_turn: int = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._watch = self.coordinator.watch_prefix(MEMBERS, self._members_changed)

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()

    async def register(self, member: Member) -> None:
        """Announce (or update) one role of this process, bound to its lease."""
        await self.coordinator.put(member_key(member.role, member.id), member.to_value())

    async def deregister(self, member: Member) -> None:
        await self.coordinator.delete(member_key(member.role, member.id))

    def on_change(self, listener: MembersChanged) -> None:
        self._listeners.append(listener)

    def _members_changed(self, snapshot: Mapping[str, str]) -> None:
        fresh: dict[Role, dict[str, Member]] = {role: {} for role in ROLES}
        for key, value in snapshot.items():
            role, _, member_id = key.removeprefix(MEMBERS).partition("/")
            if role in fresh and member_id:
                typed: Role = role
                fresh[typed][member_id] = Member.from_value(typed, member_id, value)
        before = {role: set(self.members[role]) for role in ROLES}
        self.members = fresh
        self._sorted = {role: sorted(fresh[role]) for role in ROLES}
        for role in ROLES:
            joined, left = set(fresh[role]) - before[role], before[role] - set(fresh[role])
            if joined or left:
                log.info("%s members: %s (joined %s, left %s)", role,
                         sorted(fresh[role]) or "none", sorted(joined), sorted(left))  # fmt: skip
                for listener in self._listeners:
                    listener(role, joined, left)

    # -- decisions -----------------------------------------------------------------------------

    def live(self, role: Role) -> list[str]:
        return self._sorted[role]

    def scheduler_for(self, key: QueueKey) -> str | None:
        """The scheduler owning an action's queue in one invocation namespace."""
        queue = f"{key.invocation_namespace}/{key.action_path}"
        return rendezvous(queue, self._sorted["scheduler"])

    def alarm_owner(self, namespace: str, trigger: str) -> str | None:
        """The scheduler owning the shard of an alarm."""
        shard = alarm_shard(namespace, trigger, self.alarm_shards)
        return rendezvous(f"shard/{shard}", self._sorted["scheduler"])

    def shards_of(self, scheduler_id: str) -> frozenset[int]:
        """The alarm shards a scheduler owns in this view."""
        schedulers = self._sorted["scheduler"]
        return frozenset(shard for shard in range(self.alarm_shards)
                         if rendezvous(f"shard/{shard}", schedulers) == scheduler_id)  # fmt: skip

    def url_of(self, role: Role, member_id: str) -> str | None:
        member = self.members[role].get(member_id)
        return member.url if member is not None and member.url else None

    def choose_invoker(self, memory_mb: int) -> str | None:
        """Invokers with room for `memory_mb` take turns (their free memory is reported every
        second, so picking the roomiest would send a burst of cold starts to one invoker); with
        no room anywhere, still one: it evicts idle containers or says no."""
        invokers = self.members["invoker"]
        if not invokers:
            return None
        self._invoker_turn += 1
        roomy = [i for i in self._sorted["invoker"]
                 if (free := invokers[i].free_mb) is None or free >= memory_mb]  # fmt: skip
        pool = roomy or self._sorted["invoker"]
        return pool[self._invoker_turn % len(pool)]
