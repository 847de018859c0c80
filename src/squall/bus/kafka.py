"""Kafka as the message bus between processes (cluster mode), over confluent-kafka.

Three kinds of librdkafka clients, each served by its own thread so the event loop never
waits on the network:

- one producer, tuned for latency (no linger, acks from the leader, Nagle off); a poll thread
  serves its delivery reports. A failed delivery of a retriable kind (the broker lost the
  topic, a leader moved) is produced again a few times; a final failure is logged once per
  kind of error, never with the message (it may carry an API key).
- one consumer per consumer group (a process subscribes every topic in its member id's group,
  so one consumer per process), in its own thread: it decodes what has arrived and hands it
  to the event loop in one `call_soon_threadsafe`; an offset is committed only after the
  handler ran (in a commit every COMMIT_INTERVAL_S, and on revoke and close),
  so a message is never lost by a process that dies between fetching and handling it (and,
  across a rebalance or a crash, may be handled twice: at least once). An unreadable message,
  or one whose handler raises, is logged, skipped and committed: one bad message must not stop
  a topic.
- a keeper thread with an admin client: it creates the topics this process uses (with the
  configured partitions), checks once a second that they still exist and creates them again
  when a broker lost them (Tansu keeps topics in memory only), and turns librdkafka's errors
  into `problem()`: one reason and one fix naming Squall's settings, logged once per change.

librdkafka's own log lines go to a bounded collector that the diagnosis reads, never to the
process log: a broker that refuses every login would otherwise flood it, and nothing here ever
prints a password (librdkafka does not quote credentials; settings are named, never shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from squall.abc import MessageBus, MessageHandler, Subscription
from squall.bus import codec
from squall.bus.kafka_client import Collected, client_config, probe, require_client
from squall.config import KafkaSettings
from squall.errors import ConfigurationError, DependencyUnavailable

log = logging.getLogger("squall.kafka")

CHECK_INTERVAL_S = 1.0  # how often the keeper checks that the topics still exist
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 10.0  # the keeper's backoff while the broker is unusable
PROBE_TIMEOUT_S = 1.5  # a refusal is known well within 2 s
START_WAIT_S = 2.0  # start() waits this long at most for the first check and topic creation
POLL_S = 0.1  # consumer and producer poll slices: bounds how long close() takes
# Handled offsets are committed at most this often (and always on revoke and close): a commit
# per message doubled the broker's requests. A crash redelivers at most this much more.
COMMIT_INTERVAL_S = 0.1
BATCH_MAX = 500  # records a consumer hands to the event loop at once
# `publish` refuses while this many records wait in the producer (librdkafka holds 100,000).
MAX_QUEUED = 90_000
CLOSE_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 5.0
REDELIVERIES = 3  # a retriable delivery failure is produced again this many times

# Errors after which the topic is created again and the message produced again.
_TOPIC_GONE = {"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"}

# A small request goes out at once instead of waiting for the ACK of the one before (Nagle's
# algorithm with delayed ACKs costs ~40 ms a hop).
_NO_NAGLE = {"socket.nagle.disable": True}


class KafkaBus(MessageBus):
    """Topics and consumer groups on Kafka brokers; see the module docstring.

    Topic names given to `publish`, `subscribe` and `ensure_topic` are Squall's (e.g.
    `scheduler0`); `kafka.topic_prefix` is prepended to each on the broker. `topics` are
    created on `start`, others when first published to or subscribed. `client_id` names this
    process's clients to the broker (e.g. the member id).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        client_id: str = "squall",
        topics: Iterable[str] = (),
    ) -> None:
        if not kafka.bootstrap:
            raise ConfigurationError("the Kafka bus needs brokers: set SQUALL_KAFKA_BOOTSTRAP")
        if min(kafka.partitions, kafka.replication_factor, kafka.fetch_wait_ms) < 1:
            raise ConfigurationError(
                "kafka.partitions, kafka.replication_factor and kafka.fetch_wait_ms must be at "
                "least 1 (SQUALL_KAFKA_PARTITIONS, SQUALL_KAFKA_REPLICATION_FACTOR, "
                "SQUALL_KAFKA_FETCH_WAIT_MS)"
            )
        self.kafka = kafka
        self.client_id = client_id
        self.collected = Collected()  # librdkafka's logs and errors, for the diagnosis
        self._wanted: set[str] = {self.topic_name(topic) for topic in topics}
        self._wanted_lock = threading.Lock()
        self._problem: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None
        self._admin: Any = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._first_check = threading.Event()
        self._threads: list[threading.Thread] = []
        self._groups: dict[str, GroupConsumer] = {}  # by group name on the broker
        self._turn: dict[str, list[object]] = {}  # published in this turn of the loop, by topic
        self._delivery_failure: str | None = None
        self._ok_last_round = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the clients and threads; wait (2 s at most) for the first check. Never raises
        for a broker that is down or refuses: `problem()` says why, and the bus retries."""
        if self._producer is not None:
            return
        require_client()
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        self._loop = asyncio.get_running_loop()
        admin_config = client_config(self.kafka, client_id=f"{self.client_id}-admin")
        self._admin = self._client(AdminClient, admin_config)
        self._producer = self._client(Producer, self.producer_config())
        for target, name in ((self._serve_producer, "producer"), (self._keep, "keeper")):
            thread = threading.Thread(target=target, name=f"squall-kafka-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        await asyncio.to_thread(self._first_check.wait, START_WAIT_S)

    async def close(self) -> None:
        self._end_of_turn()  # what this turn published goes before the producer is flushed
        for consumer in list(self._groups.values()):
            for subscription in list(consumer.subscriptions()):
                await subscription.close()
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, CLOSE_TIMEOUT_S)
        self._threads.clear()
        if self._producer is not None:
            # While the brokers are unusable, waiting would only delay the exit.
            timeout = FLUSH_TIMEOUT_S if self._problem is None else POLL_S
            left = await asyncio.to_thread(self._producer.flush, timeout)
            if left:
                log.warning("kafka: %d message(s) were not delivered before close", left)
            self._producer = None

    def problem(self) -> str | None:
        return self._problem

    def _client(self, kind: Any, config: dict[str, Any]) -> Any:
        callbacks = {"error_cb": self.collected.on_error, "logger": self.collected}
        try:
            return kind({**config, **callbacks})
        except Exception as exc:  # librdkafka refuses the settings (e.g. a missing CA file)
            raise ConfigurationError(f"the Kafka client refuses its settings: {exc}") from exc

    def producer_config(self) -> dict[str, Any]:
        """The librdkafka settings of this process's producer (without the callbacks)."""
        return {
            **client_config(self.kafka, client_id=f"{self.client_id}-producer"),
            # Latency first: send at once (no batching delay), acknowledged by the leader.
            "linger.ms": 0,
            "acks": 1,
            **_NO_NAGLE,
        }

    # -- topics ------------------------------------------------------------------------------

    def topic_name(self, topic: str) -> str:
        """The topic's name on the broker: `kafka.topic_prefix` + `topic`."""
        return f"{self.kafka.topic_prefix}{topic}"

    async def ensure_topic(self, topic: str) -> bool:
        """Create `topic` (if missing) with the configured partitions; True when it exists.
        Never raises: while the broker is unusable the keeper creates it later."""
        return await asyncio.to_thread(self._ensure_now, self.topic_name(topic))

    def _want(self, name: str) -> bool:
        """Remember a topic (by its broker name) for the keeper; True when it is new."""
        with self._wanted_lock:
            if name in self._wanted:
                return False
            self._wanted.add(name)
            return True

    def _ensure_now(self, name: str) -> bool:
        self._want(name)
        return not self._create([name])

    def _create(self, names: list[str]) -> dict[str, str]:
        """Create the topics (one that exists already is fine); why each failed one failed."""
        from confluent_kafka import KafkaException
        from confluent_kafka.cimpl import NewTopic

        if not names:
            return {}
        if self._admin is None:
            return dict.fromkeys(names, "the bus is not started")
        partitions, replicas = self.kafka.partitions, self.kafka.replication_factor
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=replicas) for name in names
        ]
        futures = self._admin.create_topics(new, request_timeout=PROBE_TIMEOUT_S)
        failed: dict[str, str] = {}
        for name, future in futures.items():
            try:
                future.result(PROBE_TIMEOUT_S + 1)
                log.info("kafka: created topic %s (%d partitions)", name, partitions)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    failed[name] = f"{exc.args[0].name()}: {exc.args[0].str()}"
            except Exception as exc:  # a timeout: the keeper tries again
                failed[name] = repr(exc)
        return failed

    def _keep(self) -> None:
        """The keeper thread: check, (re)create topics, report; see the module docstring."""
        delay = FIRST_RETRY_S
        while not self._stopping.is_set():
            wait = self._check_once(delay)
            delay = FIRST_RETRY_S if self._problem is None else min(delay * 2, MAX_RETRY_S)
            self._first_check.set()
            self._wake.wait(wait)
            self._wake.clear()

    def _check_once(self, delay: float) -> float:
        """One round of the keeper; how long to wait before the next."""
        try:
            diagnosis = probe(self._admin, self.collected, self.kafka, PROBE_TIMEOUT_S)
            if not diagnosis.ok and self._ok_last_round:
                # The broker just went away: what librdkafka said as it went (connections
                # closed by the peer) would read as a refusal. Judge by what happens now.
                self.collected.clear()
                diagnosis = probe(self._admin, self.collected, self.kafka, PROBE_TIMEOUT_S)
        except Exception as exc:  # a probe that breaks is a reason, never a dead keeper
            self._report(f"the Kafka client failed: {type(exc).__name__}")
            return delay
        self._ok_last_round = diagnosis.ok
        if not diagnosis.ok:
            if diagnosis.stage == "connect":
                # What librdkafka said while the broker went away (connections closed by the
                # peer) must not read as a refusal once it listens again.
                self.collected.clear()
            self._report(f"{diagnosis.reason}; fix: {diagnosis.fix}")
            return delay
        self.collected.clear()
        with self._wanted_lock:
            missing = sorted(self._wanted - set(diagnosis.topics))
        failed = self._create(missing)
        if failed:  # the broker answers but does not create them: say so, retry with backoff
            name, why = next(iter(failed.items()))
            self._report(
                f"the brokers {','.join(self.kafka.bootstrap)} did not create topic {name} "
                f"({why}); fix: create the topics {', '.join(sorted(failed))} with "
                f"{self.kafka.partitions} partition(s), or let Squall's user create topics and "
                "keep SQUALL_KAFKA_REPLICATION_FACTOR at most the number of brokers"
            )
            return delay
        self._report(None)
        return CHECK_INTERVAL_S

    def _report(self, problem: str | None) -> None:
        """Remember why the bus is unusable; log once per change, not on every retry."""
        before, self._problem = self._problem, problem
        if problem == before:
            return
        if problem is None:
            log.warning("kafka: the brokers %s are usable again", ",".join(self.kafka.bootstrap))
        else:
            log.warning("kafka: not ready: %s", problem)

    # -- producing ---------------------------------------------------------------------------

    def publish(self, topic: str, message: object) -> None:
        """Queue `message` for `topic`; never waits for the broker.

        On the event loop, what is published in one turn of it goes to the producer at the end
        of that turn, as few records as `codec.bundles` makes (a turn runs every request whose
        data arrived together); elsewhere (a thread) it goes at once."""
        if self._producer is None:
            raise DependencyUnavailable("the Kafka bus is not started")
        if len(self._producer) >= MAX_QUEUED:
            raise DependencyUnavailable(
                "the Kafka producer's queue is full: the brokers do not take messages "
                f"({self._problem or 'no reason known yet'})"
            )
        name = self.topic_name(topic)
        if self._want(name):
            self._wake.set()  # a topic not seen before: the keeper creates it now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._produce(name, codec.encode(message), 0)
            return
        if not self._turn:
            loop.call_soon(self._end_of_turn)
        self._turn.setdefault(name, []).append(message)

    def _end_of_turn(self) -> None:
        turn, self._turn = self._turn, {}
        if turn and self._producer is None:  # closed meanwhile
            log.error("kafka: %d message(s) published as the bus closed were not sent",
                      sum(len(messages) for messages in turn.values()))  # fmt: skip
            return
        for name, messages in turn.items():
            for record in codec.bundles(messages):
                try:
                    self._produce(name, record, 0)
                except DependencyUnavailable as exc:  # its caller has returned: say so
                    log.error("kafka: %d message(s) to topic %s were not sent: %s",
                              len(messages), name, exc)  # fmt: skip

    def _produce(self, name: str, value: bytes, attempt: int) -> None:
        report = functools.partial(self._delivered, attempt)
        try:
            self._producer.produce(name, value, on_delivery=report)
        except BufferError:
            self._producer.poll(0)  # serve delivery reports, then try once more
            try:
                self._producer.produce(name, value, on_delivery=report)
            except BufferError as exc:
                raise DependencyUnavailable(
                    "the Kafka producer's queue is full: the brokers do not take messages "
                    f"({self._problem or 'no reason known yet'})"
                ) from exc

    def _serve_producer(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_S)

    def _delivered(self, attempt: int, error: Any, message: Any) -> None:
        """A delivery report, in the producer's poll thread."""
        if error is None:
            if self._delivery_failure is not None:
                log.warning("kafka: deliveries succeed again")
                self._delivery_failure = None
            return
        name = error.name()
        # Not after a timeout: a message the brokers did not take for message.timeout.ms
        # (5 min) is stale by now.
        if name in _TOPIC_GONE or (error.retriable() and name != "_MSG_TIMED_OUT"):
            self._wake.set()
            if attempt < REDELIVERIES and not self._stopping.is_set():
                with contextlib.suppress(BufferError, DependencyUnavailable):
                    self._produce(message.topic(), message.value(), attempt + 1)
                    return
        if name != self._delivery_failure:
            log.warning("kafka: a message to topic %s was not delivered: %s (%s); further "
                        "failures of this kind are not logged until a delivery succeeds",
                        message.topic(), name, error.str())  # fmt: skip
            self._delivery_failure = name

    # -- consuming ---------------------------------------------------------------------------

    def subscribe(self, topic: str, group: str, handler: MessageHandler) -> Subscription:
        loop = self._loop or asyncio.get_running_loop()
        # The prefix separates deployments sharing a broker: their groups too, so one's dead
        # members never hold up another's rebalance.
        name = self.topic_name(group)
        consumer = self._groups.get(name)
        if consumer is None:
            consumer = self._groups[name] = GroupConsumer(self, name, loop)
        return consumer.add(self.topic_name(topic), handler)

    def consumer_config(self, group: str) -> dict[str, Any]:
        """The librdkafka settings of a consumer in `group` (without the callbacks)."""
        return {
            **client_config(self.kafka, client_id=f"{self.client_id}-{group}"),
            "group.id": group,
            "enable.auto.commit": False,  # commit after handling, see GroupConsumer
            # A new group (or one whose offsets a restarted broker lost) starts at the
            # beginning: messages published before its consumer joined are not skipped.
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.kafka.fetch_wait_ms,
            "fetch.error.backoff.ms": 50,
            # A member that dies is noticed in seconds; one that leaves (close) at once.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            # A topic re-created after a broker restart is seen again within seconds.
            "topic.metadata.refresh.interval.ms": 2000,
            **_NO_NAGLE,
        }


class KafkaSubscription(Subscription):
    """A topic's handler in this process, served by its group's consumer (`GroupConsumer`)."""

    def __init__(self, consumer: GroupConsumer, name: str, handler: MessageHandler) -> None:
        self.topic, self.group = name, consumer.group
        self._consumer, self.handler = consumer, handler
        self.closed = False  # read and written on the event loop only

    def assignment(self) -> list[int]:
        """The partitions of this topic this member consumes now (diagnostics and tests)."""
        return sorted(p for t, p in self._consumer.assignment if t == self.topic)

    async def close(self) -> None:
        """Stop handing messages over (at once); the topic's partitions go to the next member
        of the group with the handled offsets committed, and messages fetched but not handled
        go with them. The group's last subscription stops its consumer and leaves the group."""
        if not self.closed:
            self.closed = True
            await self._consumer.remove(self)


class GroupConsumer:
    """One librdkafka consumer, in its own thread, for every topic this process subscribes in
    one group (a process's subscriptions share its member id as group): each consumer polls
    the broker all the time, and Tansu spends about 12% of a core per idle consumer."""

    def __init__(self, bus: KafkaBus, group: str, loop: asyncio.AbstractEventLoop) -> None:
        self.group = group
        self._bus, self._loop = bus, loop
        # Replaced, never mutated, on the event loop; the thread reads whichever it finds.
        self._routes: dict[str, KafkaSubscription] = {}
        self.assignment: list[tuple[str, int]] = []
        self._handled: deque[tuple[str, int, int]] = deque()  # (topic, partition, offset)
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"squall-kafka-{group}")  # fmt: skip

    def subscriptions(self) -> list[KafkaSubscription]:
        return list(self._routes.values())

    def add(self, name: str, handler: MessageHandler) -> KafkaSubscription:
        subscription = KafkaSubscription(self, name, handler)
        if name in self._routes:
            raise ValueError(f"topic {name} is subscribed twice in group {self.group}")
        self._routes = {**self._routes, name: subscription}
        self._changed.set()
        if not self._thread.is_alive():
            self._thread.start()
        return subscription

    async def remove(self, subscription: KafkaSubscription) -> None:
        self._routes = {t: s for t, s in self._routes.items() if s is not subscription}
        if self._routes:
            self._changed.set()  # the thread subscribes to what is left
            return
        self._bus._groups.pop(self.group, None)
        self._closing.set()
        await asyncio.to_thread(self._thread.join, CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("kafka: the consumer of group %s did not stop within %g s",
                        self.group, CLOSE_TIMEOUT_S)  # fmt: skip

    # -- the consumer thread -----------------------------------------------------------------

    def _run(self) -> None:
        from confluent_kafka import Consumer

        try:
            consumer = self._bus._client(Consumer, self._bus.consumer_config(self.group))
        except ConfigurationError as exc:
            log.error("kafka: cannot consume in group %s: %s", self.group, exc)
            return
        committed_at = time.monotonic()
        try:
            while not self._closing.is_set():
                if self._changed.is_set():
                    self._subscribe(consumer)
                # What has arrived, in one call: each return to Python waits for the GIL, which
                # a busy event loop holds for up to the switch interval (5 ms), so one message
                # per return capped a busy process at a few hundred messages a second. (With
                # a timeout, `consume` would wait for BATCH_MAX messages: the first message is
                # waited for, the rest taken as it is.)
                first = consumer.poll(POLL_S)
                received = [] if first is None else [first, *consumer.consume(BATCH_MAX, 0)]
                if time.monotonic() - committed_at >= COMMIT_INTERVAL_S:
                    self._commit(consumer, wait=False)
                    committed_at = time.monotonic()
                if received:
                    self._take(received)
        except RuntimeError:  # the event loop is closed: nobody handles messages any more
            log.debug("kafka: the event loop closed under the consumer of group %s", self.group)
        finally:
            self._commit(consumer, wait=True)
            consumer.close()

    def _subscribe(self, consumer: Any) -> None:
        self._changed.clear()
        topics = sorted(self._routes)
        for name in topics:
            self._bus._ensure_now(name)
        if topics:
            consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _take(self, received: list[Any]) -> None:
        routes = self._routes
        batch: list[tuple[KafkaSubscription, list[object], tuple[str, int, int]]] = []
        for record in received:
            error = record.error()
            if error is not None:
                if error.name() in _TOPIC_GONE:
                    self._bus._wake.set()  # the keeper creates the topic again
                log.debug("kafka: consumer of group %s: %s", self.group, error.name())
                continue
            subscription = routes.get(record.topic())
            if subscription is None:
                continue  # unsubscribed meanwhile: not committed, the next member gets it
            position = (record.topic(), record.partition(), record.offset())
            try:
                batch.append((subscription, codec.decode_all(record.value()), position))
            except codec.MessageError as exc:
                log.warning("kafka: skipped an unreadable message on %s partition %d offset "
                            "%d: %s", *position, exc)  # fmt: skip
                self._handled.append(position)  # committed: it would fail the same way again
        if batch:
            self._loop.call_soon_threadsafe(self._handle, batch)

    def _handle(
        self, batch: list[tuple[KafkaSubscription, list[object], tuple[str, int, int]]]
    ) -> None:
        """On the event loop: run the handler on each message of each record, then mark the
        record's offset for commit."""
        for subscription, messages, position in batch:
            if subscription.closed:
                continue  # not committed: the next member of the group gets it
            for message in messages:
                try:
                    subscription.handler(message)
                except Exception:  # one bad message must not stop the topic
                    log.exception("kafka: a handler failed on %s from %s",
                                  type(message).__name__, subscription.topic)  # fmt: skip
            self._handled.append(position)

    def _commit(self, consumer: Any, *, wait: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if not self._handled:
            return
        latest: dict[tuple[str, int], int] = {}
        while self._handled:
            topic, partition, offset = self._handled.popleft()
            latest[(topic, partition)] = max(offset, latest.get((topic, partition), -1))
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in latest.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=not wait)
        except KafkaException as exc:  # no coordinator now: the message may come again
            log.debug("kafka: commit in group %s failed: %s", self.group, exc.args[0].name())

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assignment = sorted((p.topic, p.partition) for p in partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._commit(consumer, wait=True)  # before another member takes these partitions
        self.assignment = []
