"""The Kafka bus against a real broker (Tansu): every message type, consumer groups, commit
after handling, refusals understood fast, recovery after a broker restart, latency.

Each test uses its own topic prefix on the shared broker; two KafkaBus instances stand for two
processes (their own producer, consumers and admin client each).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from squall.abc import Subscription
from squall.bus.kafka import KafkaBus, KafkaSubscription
from squall.config import KafkaSettings
from squall.entities.action import Action, ActionLimits
from squall.messages import ActivationMessage, Completion, ContainerCreation, QueueKey
from squall.testing import LocalTansu, tansu_binary

PASSWORD = "s3cret-Pa55word"
JOIN_TIMEOUT_S = 20.0  # a consumer group join takes ~3 s on Tansu


def settings(broker: LocalTansu, **overrides: Any) -> KafkaSettings:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    return KafkaSettings(bootstrap=(broker.bootstrap,), topic_prefix=prefix, **overrides)


@asynccontextmanager
async def buses(kafka: KafkaSettings, count: int = 2) -> AsyncIterator[list[KafkaBus]]:
    started = [KafkaBus(kafka, client_id=f"p{n}") for n in range(count)]
    try:
        for bus in started:
            await bus.start()
        yield started
    finally:
        for bus in started:
            await bus.close()


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.02)


def completion(n: int) -> Completion:
    return Completion(f"a{n:04d}", "controller0", {"n": n})


def collector() -> tuple[list[Any], Callable[[object], None]]:
    received: list[Any] = []
    return received, received.append


def ids(messages: list[Any]) -> list[str]:
    return [m.activation_id for m in messages]


async def assigned(*subscriptions: Subscription) -> None:
    members = [s for s in subscriptions if isinstance(s, KafkaSubscription)]
    assert len(members) == len(subscriptions)
    await until(lambda: all(m.assignment() for m in members), JOIN_TIMEOUT_S, "assignment")


async def test_each_message_type_round_trips_between_two_processes(
    tansu: LocalTansu, caplog: pytest.LogCaptureFixture
) -> None:
    action = Action("guest", "hello", "python:3", "def main(a): return a", "main", False,
                    ActionLimits(60_000, 256, 10, 1))  # fmt: skip
    activation = ActivationMessage(
        activation_id="a1", transaction_id="tid", invocation_namespace="guest",
        subject="guest", action=action, revision=3, content={"name": "Ada"}, blocking=True,
        controller_id="controller0", received_ms=1_700_000_000_000, cause="c1",
    )  # fmt: skip
    creation = ContainerCreation("cr1", QueueKey("guest", "guest/hello", 3), action, "scheduler0")
    done = Completion("a1", "controller0", {"activationId": "a1", "response": {"result": {}}})
    async with buses(settings(tansu)) as (sender, receiver):
        received, handler = collector()
        seen_by_flaky: list[object] = []

        def flaky(message: object) -> None:  # a failing handler must not stop its topic
            seen_by_flaky.append(message)
            raise ValueError("handler bug")

        subscription = receiver.subscribe("scheduler0", "scheduler0", handler)
        failing = receiver.subscribe("scheduler0", "flaky", flaky)
        for message in (activation, creation, done):
            sender.publish("scheduler0", message)
        await until(lambda: len(received) == 3 and len(seen_by_flaky) == 3, JOIN_TIMEOUT_S, "all")
        await subscription.close()
        await failing.close()
    assert len([r for r in caplog.records if "a handler failed" in r.getMessage()]) == 3
    got_activation, got_creation, got_done = received
    assert got_activation.content == {"name": "Ada"} and got_activation.blocking
    assert got_activation.action.qualified == "guest/hello" and got_activation.revision == 3
    assert got_creation == creation  # the creation carries the code
    assert got_done == done
    assert sender.problem() is None and receiver.problem() is None


async def test_every_group_gets_every_message_and_members_share(tansu: LocalTansu) -> None:
    async with buses(settings(tansu, partitions=2), count=3) as (sender, one, other):
        (first, to_first), (second, to_second), (solo, to_solo) = (collector() for _ in range(3))
        members = [one.subscribe("work", "shared", to_first),
                   other.subscribe("work", "shared", to_second)]  # fmt: skip
        alone = other.subscribe("work", "alone", to_solo)
        await assigned(*members, alone)
        split = [m for m in members if isinstance(m, KafkaSubscription)]
        await until(lambda: all(len(m.assignment()) == 1 for m in split), JOIN_TIMEOUT_S, "split")
        sent = [completion(n) for n in range(40)]
        for message in sent:  # one per turn of the loop: each its own record
            sender.publish("work", message)
            await asyncio.sleep(0)
        await until(lambda: len(first) + len(second) == 40 and len(solo) == 40, 10, "delivery")
        for subscription in (*members, alone):
            await subscription.close()
    assert sorted(ids(first) + ids(second)) == ids(sent)  # each once within the group
    assert first and second  # the two members shared the partitions
    assert sorted(ids(solo)) == ids(sent)


async def test_what_one_turn_publishes_is_one_record_read_back_in_order(
    tansu: LocalTansu,
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    kafka = settings(tansu)
    async with buses(kafka) as (sender, receiver):
        received, handler = collector()
        subscription = receiver.subscribe("turn", "turn", handler)
        await assigned(subscription)
        sent = [completion(n) for n in range(40)]
        for message in sent:  # one turn of the event loop
            sender.publish("turn", message)
        await until(lambda: len(received) == 40, JOIN_TIMEOUT_S, "delivery")
        await subscription.close()
    assert ids(received) == ids(sent)
    raw = Consumer({"bootstrap.servers": tansu.bootstrap, "group.id": uuid.uuid4().hex,
                    "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        raw.assign([TopicPartition(sender.topic_name("turn"), 0, 0)])  # no group to join
        records = []
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while time.monotonic() < deadline and not records:
            record = await asyncio.to_thread(raw.poll, 0.5)
            if record is not None and record.error() is None:
                records.append(record)
        records += [r for r in await asyncio.to_thread(raw.consume, 100, 1.0) if not r.error()]
    finally:
        raw.close()
    assert len(records) == 1  # the broker holds one record for the 40 messages


async def test_a_later_member_resumes_after_the_last_handled_message(tansu: LocalTansu) -> None:
    kafka = settings(tansu)
    async with buses(kafka) as (sender, receiver):
        first, record = collector()
        closing: list[asyncio.Task[None]] = []

        def handle_then_leave(message: object) -> None:
            record(message)
            if len(first) == 5:  # messages fetched but not handled yet stay uncommitted
                closing.append(asyncio.create_task(subscription.close()))

        subscription = receiver.subscribe("jobs", "workers", handle_then_leave)
        await assigned(subscription)
        sent = [completion(n) for n in range(20)]
        for message in sent:
            sender.publish("jobs", message)
            await asyncio.sleep(0.02)  # pacing: the member leaves while messages still arrive
        await until(lambda: bool(closing), 10, "five handled")
        await closing[0]
        handled_before = len(first)
        second, to_second = collector()
        later = sender.subscribe("jobs", "workers", to_second)
        await until(lambda: len(first) + len(second) >= 20, JOIN_TIMEOUT_S, "the rest")
        await asyncio.sleep(0.5)  # a repeated message would arrive in this time
        await later.close()
    assert len(first) == handled_before  # no handler call after close
    assert ids(first) + ids(second) == ids(sent)  # none lost, none repeated, in order
    assert second


async def test_an_unreadable_message_is_skipped_and_committed(
    tansu: LocalTansu, caplog: pytest.LogCaptureFixture
) -> None:
    from confluent_kafka import Producer

    kafka = settings(tansu)
    async with buses(kafka, count=1) as (bus,):
        assert await bus.ensure_topic("mixed")
        raw = Producer({"bootstrap.servers": tansu.bootstrap})
        for value in (b"not json", b'{"v": 99, "type": "completion"}', b'{"v": 1}'):
            raw.produce(bus.topic_name("mixed"), value)
        assert raw.flush(5) == 0
        bus.publish("mixed", completion(1))
        received, handler = collector()
        with caplog.at_level(logging.WARNING, logger="squall.kafka"):
            first = bus.subscribe("mixed", "readers", handler)
            await until(lambda: len(received) == 1, JOIN_TIMEOUT_S, "the readable message")
            await first.close()
        assert ids(received) == ["a0001"]
        skipped = [r for r in caplog.records if "unreadable" in r.getMessage()]
        assert len(skipped) == 3 and "newer" in skipped[1].getMessage()
        bus.publish("mixed", completion(2))
        later = bus.subscribe("mixed", "readers", handler)  # starts after what was committed
        await until(lambda: len(received) == 2, JOIN_TIMEOUT_S, "the next message")
        await later.close()
    assert ids(received) == ["a0001", "a0002"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ["no SASL settings", "SQUALL_KAFKA_SECURITY_PROTOCOL", "SQUALL_KAFKA_SASL_MECHANISM"]),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
          "sasl_username": "alice", "sasl_password": PASSWORD},
         ["SCRAM-SHA-256", "'alice'", "SQUALL_KAFKA_SASL_PASSWORD"]),
    ],
    ids=["no-sasl", "scram"],
)  # fmt: skip
async def test_a_refusing_broker_is_reported_fast_once_and_without_the_password(
    tansu_auth: LocalTansu,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    expected: list[str],
) -> None:
    bus = KafkaBus(settings(tansu_auth, **overrides))
    with caplog.at_level(logging.DEBUG, logger="squall"):
        started = time.monotonic()
        await bus.start()  # neither raises nor hangs
        await until(lambda: bus.problem() is not None, 2.0, "the refusal reported")
        elapsed = time.monotonic() - started
        subscription = bus.subscribe("topic", "group", lambda message: None)
        bus.publish("topic", completion(1))  # queued, not raised
        await asyncio.sleep(2.5)  # retries happen meanwhile; none may log again
        problem = bus.problem() or ""
        await subscription.close()
        await bus.close()
    print(f"refusal reported after {elapsed * 1000:.0f} ms: {problem}")
    assert tansu_auth.bootstrap in problem
    for fragment in expected:
        assert fragment in problem
    reports = [r for r in caplog.records if "not ready" in r.getMessage()]
    assert len(reports) == 1
    assert PASSWORD not in problem and PASSWORD not in caplog.text


async def test_broker_down_at_start_then_up(tansu: LocalTansu) -> None:
    from confluent_kafka.admin import AdminClient

    binary = tansu_binary()  # present: the tansu fixture requires it
    assert binary is not None
    broker = LocalTansu(binary)  # not started yet
    bus = KafkaBus(settings(broker), topics=["early"])
    await bus.start()  # nothing listens yet: no exception, a reason
    try:
        await until(lambda: bus.problem() is not None, 3.0, "the outage reported")
        assert "cannot connect" in (bus.problem() or "")
        broker.start()
        await until(lambda: bus.problem() is None, 15.0, "recovery")
        topics = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
        assert bus.topic_name("early") in topics.topics  # created by the bus once it could
    finally:
        await bus.close()
        broker.stop()


async def test_consuming_and_producing_resume_after_a_broker_restart(tansu: LocalTansu) -> None:
    binary = tansu_binary()
    assert binary is not None
    broker = LocalTansu(binary)  # our own: this test kills it
    broker.start()
    try:
        async with buses(settings(broker)) as (sender, receiver):
            received, handler = collector()
            subscription = receiver.subscribe("events", "listeners", handler)
            sender.publish("events", completion(0))
            await until(lambda: len(received) == 1, JOIN_TIMEOUT_S, "before the restart")
            # Killed, down 1 s, started empty: every topic and offset is gone.
            restart = asyncio.create_task(asyncio.to_thread(broker.restart, 1.0))
            restarted = time.monotonic()
            sent = [completion(n) for n in range(1, 31)]
            for message in sent:  # published before, during and after the outage
                sender.publish("events", message)
                await asyncio.sleep(0.1)
            await restart
            arrived = lambda: {m.activation_id for m in received} >= set(ids(sent))  # noqa: E731
            await until(arrived, 30, "every message published around the restart")
            print(f"all messages arrived {time.monotonic() - restarted:.1f} s after the restart")
            await until(lambda: sender.problem() is None and receiver.problem() is None, 5, "ok")
            await subscription.close()
    finally:
        broker.stop()


async def test_publish_to_handler_latency(tansu: LocalTansu) -> None:
    async with buses(settings(tansu)) as (sender, receiver):
        arrived: asyncio.Queue[float] = asyncio.Queue()
        subscription = receiver.subscribe("ping", "pong", lambda m: arrived.put_nowait(
            time.perf_counter()))  # fmt: skip
        sender.publish("ping", completion(0))
        await asyncio.wait_for(arrived.get(), JOIN_TIMEOUT_S)
        samples = []
        for n in range(200):
            sent = time.perf_counter()
            sender.publish("ping", completion(n))
            samples.append((await asyncio.wait_for(arrived.get(), 5) - sent) * 1000)
        await subscription.close()
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(f"publish -> handler over Kafka (Tansu): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p50 < 100  # a sanity bound only; the benchmark measures the invoke path
