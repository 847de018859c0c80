"""A blocking activation's completion sent straight to its controller's internal endpoint, and
through the bus when that controller cannot be reached (`DirectCompletions`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from squall.bus.memory import MemoryBus
from squall.cluster.internal import INTERNAL_PREFIX, InternalClient
from squall.controller.completions import completion_routes
from squall.invoker.remote import DirectCompletions
from squall.messages import Completion, completed_topic
from squall.platform import build_platform
from squall.testing import free_port
from tests.conftest import make_settings

TOKEN = "cluster-token"


class _Server(uvicorn.Server):
    """The test process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def test_a_completion_reaches_its_waiting_controller_or_goes_through_the_bus(
    tmp_path: Path,
) -> None:
    platform = build_platform(make_settings(tmp_path / "data"))
    await platform.start()
    port = free_port()
    app = Starlette(routes=completion_routes(platform.controller, TOKEN))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", lifespan="off",
                            log_config=None, log_level="warning")  # fmt: skip
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    bus, client = MemoryBus(), InternalClient(TOKEN)
    through_bus: list[Any] = []
    bus.subscribe(completed_topic("gone"), "test", through_bus.append)
    urls = {"controller0": f"http://127.0.0.1:{port}", "gone": f"http://127.0.0.1:{free_port()}"}
    direct = DirectCompletions(urls.get, client, bus)
    try:
        for _ in range(500):  # 5 s at most
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        waiter = asyncio.get_running_loop().create_future()
        platform.controller._waiters["a1"] = waiter
        direct.send(Completion("a1", "controller0", {"activationId": "a1"}))
        assert await asyncio.wait_for(waiter, 5) == {"activationId": "a1"}
        direct.send(Completion("a2", "gone", {"activationId": "a2"}))  # nothing listens there
        await direct.close()
        assert [c.activation_id for c in through_bus] == ["a2"]
        async with httpx.AsyncClient(base_url=urls["controller0"] + INTERNAL_PREFIX) as http:
            unauthorised = await http.post("/completions", json={"message": {}})
            assert unauthorised.status_code == 401
            headers = {"authorization": f"Bearer {TOKEN}"}
            for body in ({"message": {"v": 2, "type": "invalidation"}}, {"message": 3}, []):
                reply = await http.post("/completions", json=body, headers=headers)
                assert reply.status_code == 400, reply.text
                assert reply.json()["error"] and reply.json()["code"]
    finally:
        server.should_exit = True
        await serving
        await client.close()
        await platform.close()
