"""Sequences: the controller runs the components one after the other, as OpenWhisk does.

Each component is an ordinary activation (it goes through the scheduler and an invoker) with
`cause` set to the sequence's activation id and the annotation `causedBy: sequence`. Its
result is the next component's input; an error stops the sequence and becomes its result.
The sequence's own record lists the component activation ids as its logs, carries `topmost`
(false for a sequence inside a sequence, which also gets `cause` and `causedBy`) and its
duration is the sum of the components' durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from squall.abc import ActivationStore
from squall.config import SystemLimits
from squall.controller.auth import Identity
from squall.controller.errors import ApiError
from squall.controller.packages import ResolvedAction
from squall.entities.action import SEQUENCE
from squall.entities.activation import (
    APPLICATION_ERROR,
    SUCCESS,
    WHISK_ERROR,
    ActivationResponse,
    build_record,
)
from squall.entities.names import EntityPath, IllegalName, parse_qualified
from squall.errors import StoreError
from squall.messages import ActivationMessage

log = logging.getLogger("squall.controller.sequences")

TOO_LONG = "Too many actions in the sequence."
CYCLIC = "Sequence may not refer to itself."
COMPONENT_MISSING = "Sequence component does not exist."
SEQUENCE_FAILED = "Sequence failed."
# A component may queue before it runs: wait this long beyond its own time limit.
COMPONENT_WAIT_SLACK_MS = 60_000


def component_timeout(activation_id: str) -> str:
    return f"Timeout reached when retrieving activation {activation_id} for sequence component."


@dataclass(slots=True)
class SequenceRun:
    """An accepted sequence invocation, not yet started."""

    activation_id: str
    identity: Identity
    resolved: ResolvedAction
    params: dict[str, Any]
    transaction_id: str
    cause: str | None = None
    topmost: bool = True


@dataclass(slots=True)
class _Accounting:
    """What the components of one topmost sequence have used so far."""

    atomic: int = 0
    nested: int = 0  # inner sequences started; bounds a cycle made by concurrent updates
    duration_ms: int = 0
    max_memory: int = 0
    ids: list[str] = field(default_factory=list)


class InvokePath(Protocol):
    """What sequences need from the controller service (which implements it)."""

    activations: ActivationStore
    limits: SystemLimits

    async def resolve_action(self, caller: str, path: EntityPath) -> ResolvedAction: ...

    async def prepare(
        self,
        identity: Identity,
        path: EntityPath,
        params: dict[str, Any],
        *,
        blocking: bool,
        transaction_id: str,
        cause: str | None = None,
        in_sequence: bool = False,
    ) -> ActivationMessage | SequenceRun: ...

    async def send_and_wait(
        self, message: ActivationMessage, wait_ms: int
    ) -> dict[str, Any] | None: ...


class Sequences:
    """Checks sequences when they are written and runs them when they are invoked."""

    def __init__(self, service: InvokePath) -> None:
        self._service = service
        self._running: set[asyncio.Task[dict[str, Any]]] = set()

    async def close(self) -> None:
        """Cancel sequences still running (their components' records are kept)."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- PUT -------------------------------------------------------------------------------

    async def check(self, caller: str, path: EntityPath, components: list[str]) -> None:
        """Every component exists and may be invoked, no cycle, at most the allowed length.

        The length counts atomic actions, with inner sequences expanded, as OpenWhisk does.
        """
        limit = self._service.limits.sequence_max_length
        if len(components) > limit:
            raise ApiError(400, TOO_LONG)
        atomic = await self._count(caller, path.qualified, components, (), limit)
        if atomic > limit:
            raise ApiError(400, TOO_LONG)

    async def _count(
        self,
        caller: str,
        root: str,
        components: list[str],
        ancestors: tuple[str, ...],
        limit: int,
    ) -> int:
        total = 0
        for component in components:
            resolved = await self._component(caller, component)
            action = resolved.action
            if action.qualified == root or action.qualified in ancestors:
                raise ApiError(400, CYCLIC)
            if action.is_sequence:
                inner = (*ancestors, action.qualified)
                total += await self._count(caller, root, action.components, inner, limit)
            else:
                total += 1
            if total > limit:
                raise ApiError(400, TOO_LONG)
        return total

    async def _component(self, caller: str, component: str) -> ResolvedAction:
        try:
            path = parse_qualified(component, caller)
            return await self._service.resolve_action(caller, path)
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(400, COMPONENT_MISSING) from exc
            raise

    # -- invoke ----------------------------------------------------------------------------

    async def launch(
        self, run: SequenceRun, *, blocking: bool, wait_ms: int
    ) -> dict[str, Any] | None:
        """Start a topmost sequence; with `blocking`, its record if it ends within `wait_ms`.

        The sequence goes on past the wait (the caller gets 202 and polls), as in OpenWhisk.
        """
        task = asyncio.create_task(self.run(run, _Accounting()))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        if not blocking:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait_ms / 1000)
        except TimeoutError:
            return None

    async def run(self, run: SequenceRun, accounting: _Accounting) -> dict[str, Any]:
        """Run every component, then store and return the sequence's record."""
        start = int(time.time() * 1000)
        own = _Accounting()
        try:
            response = await self._components(run, accounting, own)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "sequence %s (%s) failed", run.resolved.action.qualified, run.activation_id
            )
            response = ActivationResponse(WHISK_ERROR, {"error": SEQUENCE_FAILED})
        record = self._record(run, own, start, response)
        try:
            self._service.activations.store(record)
        except StoreError as exc:
            log.error("sequence activation record not stored: %s", exc)
        return record

    async def _components(
        self, run: SequenceRun, accounting: _Accounting, own: _Accounting
    ) -> ActivationResponse:
        payload = run.params
        response = ActivationResponse(SUCCESS, payload)
        for component in run.resolved.action.components:
            record, failure = await self._one(run, component, payload, accounting)
            if failure is not None:
                return failure
            assert record is not None
            own.ids.append(record["activationId"])
            own.duration_ms += int(record.get("duration", 0))
            own.max_memory = max(own.max_memory, _memory(record))
            result = record["response"]
            response = ActivationResponse(result["statusCode"], result.get("result"))
            if not response.success:
                return response
            payload = response.result if isinstance(response.result, dict) else {}
        return response

    async def _one(
        self, run: SequenceRun, component: str, payload: dict[str, Any], accounting: _Accounting
    ) -> tuple[dict[str, Any] | None, ActivationResponse | None]:
        """One component's record, or the response that ends the sequence instead."""
        try:
            path = parse_qualified(component, run.identity.namespace)
            prepared = await self._service.prepare(
                run.identity,
                path,
                payload,
                blocking=True,
                transaction_id=run.transaction_id,
                cause=run.activation_id,
                in_sequence=True,
            )
        except IllegalName:
            return None, ActivationResponse(APPLICATION_ERROR, {"error": COMPONENT_MISSING})
        except ApiError as exc:
            message = COMPONENT_MISSING if exc.status == 404 else exc.message
            code = WHISK_ERROR if exc.status >= 500 else APPLICATION_ERROR
            return None, ActivationResponse(code, {"error": message})
        if isinstance(prepared, SequenceRun):
            accounting.nested += 1
            if accounting.nested > self._service.limits.sequence_max_length:
                return None, ActivationResponse(APPLICATION_ERROR, {"error": TOO_LONG})
            prepared.topmost = False
            return await self.run(prepared, accounting), None
        accounting.atomic += 1
        if accounting.atomic > self._service.limits.sequence_max_length:
            return None, ActivationResponse(APPLICATION_ERROR, {"error": TOO_LONG})
        wait_ms = prepared.action.limits.timeout + COMPONENT_WAIT_SLACK_MS
        record = await self._service.send_and_wait(prepared, wait_ms)
        if record is None:
            error = component_timeout(prepared.activation_id)
            return None, ActivationResponse(WHISK_ERROR, {"error": error})
        return record, None

    def _record(
        self, run: SequenceRun, own: _Accounting, start: int, response: ActivationResponse
    ) -> dict[str, Any]:
        action = run.resolved.action
        limits = action.limits.to_json()
        if own.max_memory:
            limits["memory"] = own.max_memory
        annotations: list[dict[str, Any]] = [
            {"key": "topmost", "value": run.topmost},
            {"key": "path", "value": action.qualified},
            {"key": "kind", "value": SEQUENCE},
            {"key": "limits", "value": limits},
        ]
        if not run.topmost:
            annotations.append({"key": "causedBy", "value": SEQUENCE})
        if run.resolved.binding:
            annotations.append({"key": "binding", "value": run.resolved.binding})
        record = build_record(
            namespace=run.identity.namespace,
            name=action.name,
            version=action.version,
            subject=run.identity.subject,
            activation_id=run.activation_id,
            start=start,
            end=int(time.time() * 1000),
            response=response,
            logs=list(own.ids),
            annotations=annotations,
            cause=run.cause,
        )
        record["duration"] = own.duration_ms
        return record


def _memory(record: dict[str, Any]) -> int:
    for entry in record.get("annotations", []):
        if entry.get("key") == "limits" and isinstance(entry.get("value"), dict):
            return int(entry["value"].get("memory", 0))
    return 0
