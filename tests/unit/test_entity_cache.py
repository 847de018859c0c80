"""The fire path's entity cache: bounded, expiring, and never keeping a read that raced a change."""

from __future__ import annotations

import pytest

from squall.controller.cache import EntityCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_served_for_half_its_ttl_at_least_and_never_beyond_it() -> None:
    clock = Clock()
    cache: EntityCache[int] = EntityCache(1000, ttl_s=30.0, clock=clock)
    for n in range(200):
        cache.put(("guest", f"t{n}"), n, cache.generation)
    clock.now += 14.9
    assert all(cache.get(("guest", f"t{n}")) == n for n in range(200))
    clock.now += 10.0  # 24.9 s: some expired, not all (their lifetimes are spread)
    left = sum(cache.get(("guest", f"t{n}")) is not None for n in range(200))
    assert 0 < left < 200
    clock.now += 5.2
    assert all(cache.get(("guest", f"t{n}")) is None for n in range(200))
    assert len(cache) == 0


def test_the_oldest_entry_makes_room() -> None:
    cache: EntityCache[int] = EntityCache(3, ttl_s=30.0)
    for n in range(5):
        cache.put(("guest", f"t{n}"), n, cache.generation)
    assert len(cache) == 3
    assert [cache.get(("guest", f"t{n}")) for n in range(5)] == [None, None, 2, 3, 4]
    cache.put(("guest", "t2"), 20, cache.generation)  # put again: now the newest
    cache.put(("guest", "t5"), 5, cache.generation)
    assert cache.get(("guest", "t3")) is None and cache.get(("guest", "t2")) == 20


def test_forget_drops_one_name_or_a_whole_path() -> None:
    cache: EntityCache[int] = EntityCache(10, ttl_s=30.0)
    for key in (("guest", "a"), ("guest", "b"), ("guest/pkg", "a"), ("other", "a")):
        cache.put(key, 1, cache.generation)
    cache.forget("guest", "a")
    assert cache.get(("guest", "a")) is None and cache.get(("guest", "b")) == 1
    cache.forget("guest/pkg", "")
    assert cache.get(("guest/pkg", "a")) is None
    assert cache.get(("guest", "b")) == 1 and cache.get(("other", "a")) == 1


def test_a_read_that_raced_an_invalidation_is_not_kept() -> None:
    """The fire read the entity, a change was written and forgotten, then the read returned:
    its (maybe old) value must not become the cached one."""
    cache: EntityCache[str] = EntityCache(10, ttl_s=30.0)
    before_read = cache.generation
    cache.forget("guest", "t")  # the change, while the read was in flight
    cache.put(("guest", "t"), "old", before_read)
    assert cache.get(("guest", "t")) is None
    cache.put(("guest", "t"), "new", cache.generation)
    assert cache.get(("guest", "t")) == "new"


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        EntityCache(0, ttl_s=1.0)
    with pytest.raises(ValueError):
        EntityCache(1, ttl_s=0.0)
