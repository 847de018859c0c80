"""Activation records in OpenWhisk's shape, and how a sandbox's output becomes a response."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

from squall.entities.action import key_value

JSON = dict[str, Any]

SUCCESS = 0
APPLICATION_ERROR = 1
DEVELOPER_ERROR = 2
WHISK_ERROR = 3

STATUS_NAMES = {
    SUCCESS: "success",
    APPLICATION_ERROR: "application error",
    DEVELOPER_ERROR: "action developer error",
    WHISK_ERROR: "whisk internal error",
}

# OpenWhisk's own wording, so clients that match on messages keep working.
INVALID_JSON = "The action did not produce a valid JSON or JSON Array response."
NO_RESPONSE = "The action did not produce a valid response and exited unexpectedly."
INIT_FAILED = "The action failed during initialization"


_ID_CHARS = frozenset("0123456789abcdef")


def new_activation_id() -> str:
    """32 lowercase hex digits, a uuid without dashes."""
    return os.urandom(16).hex()


def is_activation_id(value: str) -> bool:
    """True for 32 lowercase hex digits, the only form the API accepts."""
    return len(value) == 32 and set(value) <= _ID_CHARS


@dataclass(slots=True)
class ActivationResponse:
    """`response` of a record: status code and result."""

    status_code: int
    result: Any
    size: int | None = None

    @property
    def success(self) -> bool:
        return self.status_code == SUCCESS

    def to_json(self) -> JSON:
        out: JSON = {
            "status": STATUS_NAMES[self.status_code],
            "statusCode": self.status_code,
            "success": self.success,
            "result": self.result,
        }
        if self.size is not None:
            out["size"] = self.size
        return out


def developer_error(message: str) -> ActivationResponse:
    return ActivationResponse(DEVELOPER_ERROR, {"error": message})


def whisk_error(message: str) -> ActivationResponse:
    return ActivationResponse(WHISK_ERROR, {"error": message})


def interpret_result(raw: bytes | None, max_bytes: int) -> ActivationResponse:
    """Apply OpenWhisk's invoker rules to what the action returned.

    A JSON object is a success, or an application error when it has an `error` key; a JSON
    array is a success; anything else is a developer error. A result over the size limit is
    replaced by an application error naming both sizes, as OpenWhisk truncates.
    """
    if raw is None:
        return developer_error(NO_RESPONSE)
    if len(raw) > max_bytes:
        return ActivationResponse(
            APPLICATION_ERROR,
            {
                "error": f"The action produced a response that exceeded the allowed length: "
                f"{len(raw)} > {max_bytes} bytes."
            },
            size=len(raw),
        )
    try:
        result = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return developer_error(INVALID_JSON)
    if isinstance(result, dict):
        code = APPLICATION_ERROR if "error" in result else SUCCESS
        return ActivationResponse(code, result)
    if isinstance(result, list):
        return ActivationResponse(SUCCESS, result)
    return developer_error(INVALID_JSON)


def build_record(
    *,
    namespace: str,
    name: str,
    version: str,
    subject: str,
    activation_id: str,
    start: int,
    end: int,
    response: ActivationResponse,
    logs: list[str],
    annotations: list[JSON],
    cause: str | None = None,
    publish: bool = False,
) -> JSON:
    """A full record, the shape GET /activations/{id} returns and the stores keep."""
    record: JSON = {
        "namespace": namespace,
        "name": name,
        "version": version,
        "subject": subject,
        "activationId": activation_id,
        "start": start,
        "end": end,
        "duration": max(0, end - start),
        "statusCode": response.status_code,
        "response": response.to_json(),
        "logs": logs,
        "annotations": annotations,
        "publish": publish,
    }
    if cause:
        record["cause"] = cause
    return record


_BRIEF_KEYS = (
    "name",
    "namespace",
    "version",
    "publish",
    "annotations",
    "activationId",
    "start",
    "end",
    "duration",
    "statusCode",
    "cause",
)


def brief(record: JSON) -> JSON:
    """The listing view (`docs=false`)."""
    return {k: record[k] for k in _BRIEF_KEYS if k in record}


def annotation(record: JSON, key: str) -> Any:
    return key_value(record.get("annotations", []), key)
