"""Names, action validation and result interpretation."""

import pytest

from squall.config import SystemLimits
from squall.entities.action import (
    EntityTooLarge,
    InvalidEntity,
    build_action,
    bump_version,
)
from squall.entities.activation import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INVALID_JSON,
    SUCCESS,
    interpret_result,
)
from squall.entities.names import IllegalName, check_name, parse_qualified

KINDS = frozenset({"python:3", "python:3.11", "python:default"})
LIMITS = SystemLimits()


def make(body: object, existing: object = None):  # type: ignore[no-untyped-def]
    return build_action("guest", "hello", body, kinds=KINDS, system=LIMITS, existing=existing)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "hello", "hello world", "a.b-c@d", "x_1"])
def test_legal_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " lead", "trail ", "a/b", "é?", "x" * 257, "a$b"])
def test_illegal_names(name: str) -> None:
    with pytest.raises(IllegalName):
        check_name(name)


def test_parse_qualified() -> None:
    assert str(parse_qualified("hello", "guest")) == "/guest/hello"
    assert str(parse_qualified("pkg/hello", "guest")) == "/guest/pkg/hello"
    assert str(parse_qualified("/_/hello", "guest")) == "/guest/hello"
    assert str(parse_qualified("/other/pkg/hello", "guest")) == "/other/pkg/hello"
    with pytest.raises(IllegalName):
        parse_qualified("/a/b/c/d", "guest")


def test_new_action_defaults() -> None:
    action = make({"exec": {"kind": "python:3", "code": "def main(a): return a"}})
    assert action.version == "0.0.1"
    assert action.limits.timeout == 60_000 and action.limits.memory == 256
    assert {"key": "exec", "value": "python:3"} in action.annotations


def test_update_keeps_code_and_bumps_version() -> None:
    first = make({"exec": {"kind": "python:3", "code": "x"}})
    second = make({"limits": {"timeout": 1000}}, existing=first)
    assert second.code == "x" and second.version == "0.0.2" and second.limits.timeout == 1000
    assert bump_version("1.2.9") == "1.2.10"


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"timeout": 50}, "Timeout 50 milliseconds below allowed threshold of 100 milliseconds."),
        ({"timeout": 400000}, "exceeds allowed threshold of 300000 milliseconds"),
        ({"memory": 1024}, "Memory 1024 MB exceeds allowed threshold of 512 MB."),
        ({"logs": 11}, "Logs 11 MB exceeds allowed threshold of 10 MB."),
        ({"memory": "big"}, "Memory must be an integer"),
    ],
)
def test_out_of_range_limits(limits: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEntity, match=message):
        make({"exec": {"kind": "python:3", "code": "x"}, "limits": limits})


def test_unknown_kind_and_missing_code() -> None:
    with pytest.raises(InvalidEntity, match="kind 'cobol:1' not in"):
        make({"exec": {"kind": "cobol:1", "code": "x"}})
    with pytest.raises(InvalidEntity, match="requires non-empty 'code'"):
        make({"exec": {"kind": "python:3"}})
    with pytest.raises(InvalidEntity):
        make(["not", "an", "object"])


def test_parameters_must_be_key_value_list() -> None:
    with pytest.raises(InvalidEntity):
        make({"exec": {"kind": "python:3", "code": "x"}, "parameters": {"a": 1}})
    action = make(
        {"exec": {"kind": "python:3", "code": "x"}, "parameters": [{"key": "a", "value": 1}]}
    )
    assert action.parameter_values() == {"a": 1}


def test_huge_parameters_are_too_large() -> None:
    big = [{"key": "a", "value": "x" * (LIMITS.parameters_bytes + 1)}]
    with pytest.raises(EntityTooLarge):
        make({"exec": {"kind": "python:3", "code": "x"}, "parameters": big})


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"a": 1}', SUCCESS),
        (b"[1, 2]", SUCCESS),
        (b'{"error": "boom"}', APPLICATION_ERROR),
        (b'"just a string"', DEVELOPER_ERROR),
        (b"42", DEVELOPER_ERROR),
        (b"not json", DEVELOPER_ERROR),
        (None, DEVELOPER_ERROR),
    ],
)
def test_interpret_result(raw: bytes | None, status: int) -> None:
    assert interpret_result(raw, 1024).status_code == status


def test_non_object_result_message() -> None:
    assert interpret_result(b"3", 10).result == {"error": INVALID_JSON}


def test_oversized_result_is_an_application_error() -> None:
    response = interpret_result(b'{"a": "' + b"x" * 100 + b'"}', 50)
    assert response.status_code == APPLICATION_ERROR
    assert "exceeded the allowed length" in response.result["error"]
