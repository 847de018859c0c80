"""The controller's internal endpoint for completions an invoker sends straight to it.

    POST /internal/v1/completions   {"message": <completion>}   204

A blocking caller waits for its activation's completion; sending it over this endpoint
instead of the controller's Kafka topic takes one broker hop off the path the caller waits on
(`invoker/remote.py`, `DirectCompletions`). Kafka stays the way for every other completion and
the fallback when this call fails, so a completion may arrive twice: the second finds no
waiter and an activation no longer in flight, and changes nothing. The route wants the
cluster token; a malformed body is a 400 with an OpenWhisk-shaped error.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from squall.bus import codec
from squall.cluster.internal import INTERNAL_PREFIX, guarded
from squall.controller.service import ControllerService
from squall.messages import Completion

COMPLETIONS_PATH = "/completions"


def completion_routes(controller: ControllerService, token: str | None) -> list[Route]:
    async def completed(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        try:
            message = codec.from_json(body["message"])
        except codec.MessageError as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(message, Completion):
            raise ValueError("the message is not a completion")
        controller.receive(message)
        return Response(status_code=204)

    return [Route(f"{INTERNAL_PREFIX}{COMPLETIONS_PATH}", guarded(token, completed),
                  methods=["POST"])]  # fmt: skip
