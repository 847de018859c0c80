"""The duration a scheduler's decisions use is a container's whole turn (hand-out to its next
fetch), not only the run it reports: in a cluster the fetch round trip is part of the turn."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from squall.bus.memory import MemoryBus
from squall.config import SchedulerSettings, SystemLimits
from squall.coordination.local import LocalCoordinator
from squall.entities.action import build_action
from squall.messages import ActivationMessage
from squall.scheduler.service import SchedulerService
from squall.stores import select
from tests.conftest import make_settings

CONTAINER = "invoker0/c1"


async def test_a_turn_counts_from_hand_out_to_the_next_fetch(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    activations = select.activation_store(settings.activation_store_url, settings.data_dir)
    scheduler = SchedulerService(
        bus=MemoryBus(),
        coordinator=LocalCoordinator(),
        activations=activations,
        settings=SchedulerSettings(),
        namespace_limit=lambda _ns: 100,
        choose_invoker=lambda _action: "invoker0",
    )
    await activations.start()
    await scheduler.start()
    try:
        body = {"exec": {"kind": "python:3", "code": "def main(a):\n  return a\n"}}
        action = build_action("guest", "echo", body, kinds=frozenset({"python:3"}),
                              system=SystemLimits(), existing=None)  # fmt: skip
        for _ in range(2):
            scheduler.accept(ActivationMessage(uuid.uuid4().hex, uuid.uuid4().hex, "guest",
                                               "guest", action, 1, {}, True, "controller0",
                                               int(time.time() * 1000)))  # fmt: skip
        key = next(iter(scheduler._queues.values())).key
        assert await scheduler.fetch(key, CONTAINER, None, 1) is not None
        await asyncio.sleep(0.2)  # the turn: the run (reported as 1 ms) and the way back
        assert await scheduler.fetch(key, CONTAINER, 1.0, 1) is not None
        queue = scheduler._queues[(key.invocation_namespace, key.action_path)]
        assert list(queue.durations) == [queue.durations[0]]
        assert 200 <= queue.durations[0] < 2000
        # A container whose run is the longer part reports it as it is.
        await asyncio.sleep(0.01)
        assert await scheduler.fetch(key, CONTAINER, 5000.0, 0.01) is None
        assert queue.durations[-1] == 5000.0
    finally:
        await scheduler.close()
        await activations.close()
