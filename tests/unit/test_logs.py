"""JSON and text log lines carry the transaction id of the request or activation."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from squall import logs
from squall.config import LogSettings
from squall.controller.app import Api
from squall.controller.auth import Identity
from squall.controller.http import json_response
from squall.platform import Platform
from tests.conftest import GUEST_KEY, GUEST_UUID


class Captured(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.addFilter(logs.TransactionFilter())
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Any:
    handler = Captured(logs.JsonFormatter())
    logger = logging.getLogger("squall.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


async def test_json_lines_carry_the_transaction_of_their_task(captured: Captured) -> None:
    log = logging.getLogger("squall.test")

    async def work(tid: str) -> None:
        logs.TRANSACTION.set(tid)
        await asyncio.sleep(0)  # interleave the two tasks
        log.warning("working on %s", tid)

    await asyncio.gather(asyncio.create_task(work("t1")), asyncio.create_task(work("t2")))
    log.info("outside")
    entries = [json.loads(line) for line in captured.lines]
    assert {(e["message"], e.get("tid")) for e in entries} == {
        ("working on t1", "t1"), ("working on t2", "t2"), ("outside", None)
    }  # fmt: skip
    assert all(e["logger"] == "squall.test" and e["time"].endswith("Z") for e in entries)


def test_errors_are_one_json_line() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("squall", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["error"]


def test_text_lines_show_the_tid() -> None:
    record = logging.LogRecord("squall", logging.INFO, __file__, 1, "hello", (), None)
    record.tid = "abc"
    assert logs.TextFormatter().format(record).endswith("squall: hello [tid abc]")


def test_configure_sets_level_and_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure(LogSettings(format="json", level="WARNING"))
        logging.getLogger("squall.x").info("hidden")
        logging.getLogger("squall.x").warning("shown")
        out = capsys.readouterr().out.strip().splitlines()
        assert [json.loads(line)["message"] for line in out] == ["shown"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def test_every_api_request_logs_under_its_transaction_id(
    platform: Platform, captured: Captured
) -> None:
    api = Api(platform.controller, platform.auth)

    async def handler(request: Request, identity: Identity, tid: str) -> Response:
        logging.getLogger("squall.test").warning("handling")
        return json_response({}, transaction_id=tid)

    app = Starlette(routes=[Route("/t", api.endpoint(handler))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall") as client:
        reply = await client.get("/t", auth=(GUEST_UUID, GUEST_KEY))
    (entry,) = [json.loads(line) for line in captured.lines]
    assert entry["tid"] == reply.headers["x-request-id"] and entry["message"] == "handling"
