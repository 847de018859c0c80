"""The versioned JSON wire form of the bus's messages."""

from __future__ import annotations

import json

import pytest

from squall.bus import codec
from squall.bus.codec import MessageError
from squall.entities.action import Action, ActionLimits
from squall.messages import (
    MESSAGE_VERSION,
    ActivationMessage,
    Completion,
    ContainerCreation,
    QueueKey,
)

CODE = "def main(args):\n    return {'secret-code': 1}\n"


def action() -> Action:
    return Action("guest/pkg", "hello", "python:3", CODE, "main", False,
                  ActionLimits(60_000, 256, 10, 1), version="0.0.2",
                  parameters=[{"key": "p", "value": 1}])  # fmt: skip


def activation() -> ActivationMessage:
    return ActivationMessage(
        activation_id="a1", transaction_id="t1", invocation_namespace="guest",
        subject="guest", action=action(), revision=4, content={"name": "Ada", "n": [1, 2]},
        blocking=True, controller_id="controller0", received_ms=1_700_000_000_123,
        api_key="uuid:key", cause="c0", extra_annotations=[{"key": "causedBy", "value": "s"}],
    )  # fmt: skip


def test_an_activation_round_trips_without_its_code() -> None:
    original = activation()
    wire = codec.encode(original)
    assert CODE.encode() not in wire and b"secret-code" not in wire
    decoded = codec.decode(wire)
    assert isinstance(decoded, ActivationMessage)
    assert decoded.action.code == ""  # the container was initialised from its creation
    original.action.code = ""
    assert decoded == original


def test_a_creation_and_a_completion_round_trip() -> None:
    creation = ContainerCreation("cr1", QueueKey("guest", "guest/pkg/hello", 4), action(), "s0")
    done = Completion("a1", "controller0", {"activationId": "a1", "response": {"result": {}}})
    assert codec.decode(codec.encode(creation)) == creation  # the creation carries the code
    assert codec.decode(codec.encode(done)) == done
    assert json.loads(codec.encode(done))["v"] == MESSAGE_VERSION


def test_a_newer_version_is_refused_with_the_fix() -> None:
    doc = json.loads(codec.encode(Completion("a1", "c0", {})))
    doc["v"] = MESSAGE_VERSION + 1
    with pytest.raises(MessageError, match=r"newer than this process reads.*upgrade"):
        codec.decode(json.dumps(doc))


@pytest.mark.parametrize(
    ("wire", "fragment"),
    [
        (b"\xff not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "completion"}', "version"),
        (b'{"v": 1, "type": "completion"}', "completion message is malformed"),
        (b'{"v": 1, "type": "activation", "activation_id": "a"}', "malformed"),
        (b'{"v": 1, "type": "creation", "creation_id": "c", "queue": {}}', "malformed"),
        (b'{"v": 1, "type": "gossip"}', "unknown message type"),
    ],
)
def test_malformed_messages_are_refused(wire: bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        codec.decode(wire)


def test_an_unknown_object_has_no_wire_form() -> None:
    with pytest.raises(MessageError, match="no wire form"):
        codec.encode(object())
