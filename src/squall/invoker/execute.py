"""Running one activation in a sandbox and turning what happened into a record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from squall.abc import InitPayload, RunPayload, Sandbox, SandboxOutcome
from squall.entities.action import Action
from squall.entities.activation import (
    NO_RESPONSE,
    ActivationResponse,
    developer_error,
    interpret_result,
)
from squall.messages import ActivationMessage

MEMORY_EXHAUSTED = "The action exhausted its memory and was aborted."


def timeout_message(timeout_ms: int) -> str:
    return f"The action exceeded its time limits of {timeout_ms} milliseconds."


@dataclass(slots=True)
class Executed:
    """A finished activation: its record, and whether the sandbox must be discarded."""

    record: dict[str, Any]
    discard: bool
    run_ms: float


def context_for(message: ActivationMessage, deadline_ms: int, api_host: str) -> dict[str, str]:
    """The `/run` keys a runtime exports as `__OW_*` variables."""
    action = message.action
    context = {
        "namespace": message.invocation_namespace,
        "action_name": "/" + action.qualified,
        "action_version": action.version,
        "activation_id": message.activation_id,
        "transaction_id": message.transaction_id,
        "deadline": str(deadline_ms),
        "api_host": api_host,
    }
    if message.api_key and action.annotation("provide-api-key", True) is not False:
        context["api_key"] = message.api_key
    return context


def init_payload(action: Action, context: dict[str, str]) -> InitPayload:
    """`/init`: the code plus init-time parameters and the `__OW_*` context as env."""
    env = {f"__OW_{k.upper()}": v for k, v in context.items()}
    for param in action.parameters:
        if param.get("init"):
            env[param["key"]] = str(param.get("value"))
    return InitPayload(
        action.name,
        action.main,
        action.code,
        action.binary,
        env,
        memory_mb=action.limits.memory,
        log_limit_bytes=action.limits.logs * 1024 * 1024,
    )


async def execute(
    sandbox: Sandbox,
    message: ActivationMessage,
    *,
    needs_init: bool,
    api_host: str,
    result_limit: int,
) -> Executed:
    """Init (on a cold start) and run one activation, and build its record."""
    action = message.action
    timeout_s = action.limits.timeout / 1000
    start_ms = int(time.time() * 1000)
    wait_ms = max(0, start_ms - message.received_ms)
    context = context_for(message, start_ms + action.limits.timeout, api_host)
    logs: list[str] = []
    init_ms: int | None = None
    if needs_init:
        outcome = await sandbox.init(init_payload(action, context), timeout_s)
        init_ms = int(time.time() * 1000) - start_ms
        logs.extend(outcome.logs)
        if outcome.failure is not None or outcome.fatal:
            response = _failure_response(outcome, action.limits.timeout, initializing=True)
            return _finish(message, start_ms, wait_ms, init_ms, response, logs, outcome, 0.0)
    run_started = time.perf_counter()
    outcome = await sandbox.run(RunPayload(_params(message), context), timeout_s)
    run_ms = (time.perf_counter() - run_started) * 1000
    logs.extend(outcome.logs)
    if outcome.failure is not None:
        response = _failure_response(outcome, action.limits.timeout, initializing=False)
    else:
        response = interpret_result(outcome.response, result_limit)
    return _finish(message, start_ms, wait_ms, init_ms, response, logs, outcome, run_ms)


def _params(message: ActivationMessage) -> dict[str, Any]:
    return message.content


def _failure_response(
    outcome: SandboxOutcome, timeout_ms: int, *, initializing: bool
) -> ActivationResponse:
    if outcome.timed_out:
        return developer_error(timeout_message(timeout_ms))
    failure = outcome.failure or NO_RESPONSE
    if failure == "memory":
        return developer_error(MEMORY_EXHAUSTED)
    if failure.startswith("crashed"):
        return developer_error(NO_RESPONSE)
    if initializing:
        return developer_error(failure)
    return developer_error(failure)


def _finish(
    message: ActivationMessage,
    start_ms: int,
    wait_ms: int,
    init_ms: int | None,
    response: ActivationResponse,
    logs: list[str],
    outcome: SandboxOutcome,
    run_ms: float,
) -> Executed:
    annotations: list[dict[str, Any]] = [
        {"key": "waitTime", "value": wait_ms},
        {"key": "timeout", "value": outcome.timed_out},
    ]
    if init_ms is not None:
        annotations.append({"key": "initTime", "value": init_ms})
    record = message.record(
        start=start_ms,
        end=int(time.time() * 1000),
        response=response,
        logs=logs,
        annotations=annotations,
    )
    return Executed(record, discard=outcome.fatal, run_ms=run_ms)
