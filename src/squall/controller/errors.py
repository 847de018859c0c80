"""Errors the API answers with, in OpenWhisk's words and shape."""

from __future__ import annotations

NOT_FOUND = "The requested resource does not exist."
ALREADY_EXISTS = "resource already exists"
CONCURRENT_MODIFICATION = "Concurrent modification to resource detected."
UNAUTHENTICATED = "The supplied authentication is invalid"
TOO_MANY_AUTH_FAILURES = "Too many failed authentication attempts from this address; retry later."
METHOD_NOT_ALLOWED = "Method not allowed."
TIMEOUT_RANGE = "Timeout must be number of milliseconds up to {max_ms}."
MALFORMED_JSON = "The request content was malformed:\n{detail}"
NOT_AN_OBJECT = "The request content was malformed: the body must be a JSON object."
INTERNAL_ERROR = "An internal error occurred."
STORE_UNAVAILABLE = "A store is temporarily unavailable; retry shortly."
RETRY_AFTER = {"Retry-After": "5"}
RESERVED_PARAMS = "Request defines parameters that are not allowed (e.g., reserved properties)."


def not_authorized(resource: str) -> str:
    return f"The supplied authentication is not authorized to access '{resource}'."


def too_large(what: str, size: int, limit: int) -> str:
    return f"The {what} is larger than allowed: {size} > {limit} bytes."


class ApiError(Exception):
    """An answer other than success: HTTP status plus OpenWhisk's error message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
