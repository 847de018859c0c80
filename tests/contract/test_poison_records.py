"""A record no backend can index is dropped loudly; it never blocks the records around it."""

from __future__ import annotations

import logging

import pytest

from squall.abc import ActivationQuery, ActivationStore

from .test_activation_store import T0, ids, record


async def test_an_unstorable_record_is_dropped_loudly_and_the_rest_written(
    activation_store: ActivationStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = [record(start=T0 + i) for i in range(3)]
    bad = {**record(start=T0 + 10), "start": 2**70}  # beyond any 64-bit column
    for rec in (good[0], bad, *good[1:]):
        activation_store.store(rec)
    with caplog.at_level(logging.ERROR):
        await activation_store.flush()
    assert sorted(ids(await activation_store.list(ActivationQuery("guest")))) == sorted(ids(good))
    assert any(bad["activationId"] in r.getMessage() for r in caplog.records)
    await activation_store.flush()  # nothing left pending to fail again
    assert getattr(activation_store, "pending_count", 0) == 0


async def test_a_non_finite_duration_is_stored_with_the_measured_one(
    activation_store: ActivationStore,
) -> None:
    rec = {**record(start=T0, duration=7), "duration": float("inf")}
    activation_store.store(rec)
    await activation_store.flush()
    stats = await activation_store.duration_stats("guest", "guest/act", T0)
    assert stats is not None and stats.average_ms == 7


async def test_a_field_of_the_wrong_type_does_not_block_writes(
    activation_store: ActivationStore,
) -> None:
    odd = {**record(start=T0), "duration": "slow", "statusCode": "fine", "publish": "yes"}
    fine = record(start=T0 + 1)
    activation_store.store(odd)
    activation_store.store(fine)
    await activation_store.flush()
    assert await activation_store.get("guest", fine["activationId"]) == fine
