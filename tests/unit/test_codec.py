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


def test_messages_of_one_turn_travel_as_bundles_of_bounded_size() -> None:
    small = [Completion(f"a{n}", "c0", {"n": n}) for n in range(5)]
    [record] = codec.bundles(small)
    assert json.loads(record)["type"] == "bundle"
    assert codec.decode_all(record) == small
    [single] = codec.bundles(small[:1])  # one message is sent as it is
    assert codec.decode_all(single) == small[:1] and codec.decode(single) == small[0]
    big = [Completion(f"b{n}", "c0", {"pad": "x" * (codec.BUNDLE_BYTES // 3)}) for n in range(7)]
    records = list(codec.bundles(big))
    assert len(records) == 4 and all(len(r) <= codec.BUNDLE_BYTES for r in records[:-1])
    assert [m for r in records for m in codec.decode_all(r)] == big  # order kept


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"v": MESSAGE_VERSION + 1, "type": "bundle", "messages": []}, "newer than this"),
        ({"v": MESSAGE_VERSION, "type": "bundle"}, "without its list"),
        ({"v": MESSAGE_VERSION, "type": "bundle", "messages": [{"v": 1, "type": "x"}]},
         "unknown message type"),
    ],
)
def test_a_bad_bundle_is_refused(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        codec.decode_all(json.dumps(doc))
