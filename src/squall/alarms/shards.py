"""Which shard an alarm belongs to, the same in every process.

Cluster mode splits alarms into `cluster.alarm_shards` shards; the lead's placement maps each
shard to one live scheduler (rendezvous hashing). The shard of an alarm must be computed alike by
every controller and scheduler, on every run: Python's `hash()` of a str is salted per process
(PYTHONHASHSEED), so a keyed-free blake2b digest of `namespace/trigger` is used instead.
"""

from __future__ import annotations

import hashlib

__all__ = ["alarm_shard"]


def alarm_shard(namespace: str, trigger: str, shards: int) -> int:
    """The shard (0 <= shard < `shards`) of the alarm of trigger `namespace/trigger`."""
    if shards < 1:
        raise ValueError("the number of alarm shards must be at least 1")
    digest = hashlib.blake2b(f"{namespace}/{trigger}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
