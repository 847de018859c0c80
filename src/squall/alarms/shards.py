"""Which shard an alarm belongs to, the same in every process.

Cluster mode splits alarms into `cluster.alarm_shards` shards; the lead's placement maps each
shard to one live scheduler (rendezvous hashing). The shard of an alarm must be computed alike by
every controller and scheduler, on every run: Python's `hash()` of a str is salted per process
(PYTHONHASHSEED), so a keyed-free blake2b digest of `namespace/trigger` is used instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["ShardOwnership", "alarm_shard"]


def alarm_shard(namespace: str, trigger: str, shards: int) -> int:
    """The shard (0 <= shard < `shards`) of the alarm of trigger `namespace/trigger`."""
    if shards < 1:
        raise ValueError("the number of alarm shards must be at least 1")
    digest = hashlib.blake2b(f"{namespace}/{trigger}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class ShardOwnership:
    """The shards this process owns, as AlarmService's `owns` callable.

    The placement calls `assign()` with the shards it gives this scheduler, then
    `AlarmService.rebalance()`. One check is a blake2b of the name and a set lookup (a few
    microseconds): cheap enough for every alarm at start and before every fire.
    """

    def __init__(self, shards: int, owned: Iterable[int] = ()) -> None:
        if shards < 1:
            raise ValueError("the number of alarm shards must be at least 1")
        self.shards = shards
        self._owned: frozenset[int] = frozenset()
        self.assign(owned)

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def assign(self, owned: Iterable[int]) -> None:
        """Own exactly these shards from now on."""
        shards = frozenset(owned)
        wrong = sorted(s for s in shards if not 0 <= s < self.shards)
        if wrong:
            raise ValueError(f"alarm shards {wrong} are not in 0..{self.shards - 1}")
        self._owned = shards

    def __call__(self, namespace: str, trigger: str) -> bool:
        return alarm_shard(namespace, trigger, self.shards) in self._owned
