"""Alarm shards: which of N shards an alarm belongs to, the same in every process."""

from __future__ import annotations

import hashlib


def alarm_shard(namespace: str, trigger: str, shards: int) -> int:
    """A stable shard number (blake2b, not Python's per-process salted `hash`)."""
    digest = hashlib.blake2b(f"{namespace}/{trigger}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
