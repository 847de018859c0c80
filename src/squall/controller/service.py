"""What the API does, apart from HTTP: entities with a cache, invokes, and blocking waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from squall.abc import ActivationStore, Coordinator, EntityStore, MessageBus
from squall.config import SystemLimits
from squall.controller.auth import Identity
from squall.controller.errors import (
    ALREADY_EXISTS,
    CONCURRENT_MODIFICATION,
    NOT_FOUND,
    ApiError,
    too_large,
)
from squall.entities.action import Action, EntityTooLarge, InvalidEntity, build_action
from squall.entities.activation import new_activation_id
from squall.entities.names import EntityPath
from squall.errors import ConflictError
from squall.messages import SCHEDULER_TOPIC, ActivationMessage, Completion, completed_topic

ACTIONS = "actions"
PACKAGES = "packages"


class ControllerService:
    """Entity CRUD over the store, and the invoke path with completions from the bus."""

    def __init__(
        self,
        *,
        entities: EntityStore,
        activations: ActivationStore,
        bus: MessageBus,
        coordinator: Coordinator,
        limits: SystemLimits,
        kinds: frozenset[str],
        controller_id: str = "controller0",
    ) -> None:
        self.entities, self.activations = entities, activations
        self._bus, self._coordinator = bus, coordinator
        self.limits, self.kinds, self.controller_id = limits, kinds, controller_id
        self._actions: dict[tuple[str, str], tuple[int, Action]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    async def start(self) -> None:
        self._subscription = self._bus.subscribe(
            completed_topic(self.controller_id), self.controller_id, self._completed
        )

    async def close(self) -> None:
        await self._subscription.close()

    def _completed(self, message: object) -> None:
        if isinstance(message, Completion):
            waiter = self._waiters.pop(message.activation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.record)

    # -- actions ---------------------------------------------------------------------------

    async def get_action(self, path: EntityPath) -> tuple[int, Action]:
        """The action and its revision, from the cache when it is fresh."""
        cache_key = (path.path, path.name)
        cached = self._actions.get(cache_key)
        if cached is not None:
            return cached
        stored = await self.entities.get(ACTIONS, path.path, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        entry = (stored.revision, Action.from_json(stored.doc))
        self._actions[cache_key] = entry
        return entry

    async def put_action(self, path: EntityPath, body: Any, overwrite: bool) -> Action:
        await self._require_package(path)
        existing = await self.entities.get(ACTIONS, path.path, path.name)
        if existing is not None and not overwrite:
            raise ApiError(409, ALREADY_EXISTS)
        previous = Action.from_json(existing.doc) if existing else None
        try:
            action = build_action(
                path.path, path.name, body, kinds=self.kinds, system=self.limits, existing=previous
            )
        except InvalidEntity as exc:
            raise ApiError(400, str(exc)) from exc
        except EntityTooLarge as exc:
            raise ApiError(413, str(exc)) from exc
        try:
            await self.entities.put(
                ACTIONS,
                path.path,
                path.name,
                action.to_json(),
                existing.revision if existing else None,
            )
        except ConflictError as exc:
            message = ALREADY_EXISTS if existing is None else CONCURRENT_MODIFICATION
            raise ApiError(409, message) from exc
        finally:
            self._actions.pop((path.path, path.name), None)
        return action

    async def delete_action(self, path: EntityPath) -> Action:
        _, action = await self.get_action(path)
        self._actions.pop((path.path, path.name), None)
        if not await self.entities.delete(ACTIONS, path.path, path.name):
            raise ApiError(404, NOT_FOUND)
        return action

    async def _require_package(self, path: EntityPath) -> None:
        if path.package is None:
            return
        if await self.entities.get(PACKAGES, path.namespace, path.package) is None:
            raise ApiError(404, NOT_FOUND)

    # -- invoke ----------------------------------------------------------------------------

    async def invoke(
        self,
        identity: Identity,
        path: EntityPath,
        params: dict[str, Any],
        *,
        blocking: bool,
        wait_ms: int,
        transaction_id: str,
        cause: str | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Accept an activation; with `blocking`, wait up to `wait_ms` for its record."""
        revision, action = await self.get_action(path)
        content = {**action.parameter_values(), **params} if action.parameters else params
        self._check_payload(params)
        if await self._coordinator.get(f"throttling/{identity.namespace}/{action.qualified}"):
            raise ApiError(429, "Too many requests")
        activation_id = new_activation_id()
        message = ActivationMessage(
            activation_id=activation_id,
            transaction_id=transaction_id,
            invocation_namespace=identity.namespace,
            subject=identity.subject,
            action=action,
            revision=revision,
            content=content,
            blocking=blocking,
            controller_id=self.controller_id,
            received_ms=int(time.time() * 1000),
            api_key=identity.api_key,
            cause=cause,
        )
        if not blocking:
            self._bus.publish(SCHEDULER_TOPIC, message)
            return activation_id, None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self._waiters[activation_id] = waiter
        self._bus.publish(SCHEDULER_TOPIC, message)
        # A bare timer instead of asyncio.wait_for: this runs once per blocking invoke.
        timer = loop.call_later(wait_ms / 1000, _give_up, waiter)
        try:
            return activation_id, await waiter
        finally:
            timer.cancel()
            self._waiters.pop(activation_id, None)

    def _check_payload(self, params: dict[str, Any]) -> None:
        if not params:
            return
        size = len(orjson.dumps(params))
        if size > self.limits.payload_bytes:
            raise ApiError(413, too_large("request", size, self.limits.payload_bytes))


def _give_up(waiter: asyncio.Future[dict[str, Any] | None]) -> None:
    """The blocking wait is over: the caller gets 202 and polls for the record."""
    if not waiter.done():
        waiter.set_result(None)
