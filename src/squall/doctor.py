"""`squall doctor`: the configuration checked against the real dependencies, one line per check.

Each check says what it did, and when it fails, why and what to set. Checks of one dependency
run in order and stop at the first failure (the later ones are reported as skipped, since
"cannot list topics" says nothing new after "cannot connect"). Nothing here prints a password:
reasons come from drivers through `scrub`, and settings are named, never shown.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from squall.abc import (
    ActivationStore,
    EntityStore,
    InitPayload,
    RunPayload,
    SandboxSpec,
    SubjectRecord,
)
from squall.config import Settings
from squall.errors import DependencyUnavailable, StoreError
from squall.ops.readiness import scrub

Status = Literal["ok", "fail", "skip"]
CLOCK_SKEW_LIMIT_S = 2.0
PROBE_TOPIC = "squall-doctor-probe"
_PROBE_ACTION = "def main(args):\n    return {'probe': args.get('probe')}\n"


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}

    def line(self) -> str:
        mark = {"ok": " ok ", "fail": "FAIL", "skip": "skip"}[self.status]
        text = f"[{mark}] {self.name:<24} {self.detail}"
        return f"{text}\n       fix: {self.fix}" if self.fix else text


class Failed(Exception):
    """A check failed: the message is the detail, `fix` what to do."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.fix = fix


Step = tuple[str, Callable[[], Awaitable[str]]]


async def _run_steps(steps: list[Step]) -> AsyncIterator[Result]:
    """Run checks in order; after the first failure the rest are skipped."""
    failed: str | None = None
    for name, step in steps:
        if failed is not None:
            yield Result(name, "skip", f"not checked: {failed} failed")
            continue
        try:
            yield Result(name, "ok", await step())
        except Failed as exc:
            failed = name
            yield Result(name, "fail", scrub(str(exc)), exc.fix)
        except Exception as exc:  # a driver's own error is the answer, shown without secrets
            failed = name
            yield Result(name, "fail", scrub(f"{type(exc).__name__}: {exc}"))


async def run_doctor(settings: Settings, *, sandbox: bool = True) -> list[Result]:
    """Every check that applies to `settings`, in a fixed order."""
    results: list[Result] = []
    groups = [_kafka_steps(settings), _etcd_steps(settings), *_store_steps(settings)]
    if sandbox:
        groups.append(_sandbox_steps())
    for steps in groups:
        async for result in _run_steps(steps):
            results.append(result)
    return results


# -- Kafka -------------------------------------------------------------------------------------


def _kafka_steps(settings: Settings) -> list[Step]:
    kafka = settings.kafka
    if settings.bus != "kafka" and not kafka.bootstrap:
        return []
    from squall.bus import kafka_client

    state: dict[str, Any] = {}

    async def connect() -> str:
        kafka_client.require_client()
        diagnosis = await asyncio.to_thread(kafka_client.diagnose, kafka, 5.0)
        state["diagnosis"] = diagnosis
        if diagnosis.stage == "connect":
            raise Failed(diagnosis.reason, diagnosis.fix)
        return f"{', '.join(kafka.bootstrap)} accepts connections ({kafka.security_protocol})"

    async def authenticate() -> str:
        diagnosis = state["diagnosis"]
        if diagnosis.stage == "authenticate":
            raise Failed(diagnosis.reason, diagnosis.fix)
        if kafka.sasl_mechanism is None:
            return "no SASL configured, and the broker asks for none"
        return f"SASL {kafka.sasl_mechanism} as user {kafka.sasl_username!r} accepted"

    async def topics() -> str:
        diagnosis = state["diagnosis"]
        if not diagnosis.ok:
            raise Failed(diagnosis.reason, diagnosis.fix)
        return f"metadata read: {len(diagnosis.topics)} topic(s)"

    async def round_trip() -> str:
        topic = f"{kafka.topic_prefix}{PROBE_TOPIC}"
        try:
            seconds = await asyncio.to_thread(kafka_client.round_trip, kafka, topic, 10.0)
        except RuntimeError as exc:
            raise Failed(str(exc), "check the user's ACLs: it needs to create, write and read "
                         f"the topic {topic} (and consumer groups squall-*)") from exc  # fmt: skip
        return f"a probe message went through {topic} in {seconds * 1000:.0f} ms"

    return [("kafka.connect", connect), ("kafka.authenticate", authenticate),
            ("kafka.topics", topics), ("kafka.produce_consume", round_trip)]  # fmt: skip


# -- etcd --------------------------------------------------------------------------------------


def _etcd_steps(settings: Settings) -> list[Step]:
    etcd = settings.etcd
    if settings.coordination != "etcd" and not etcd.endpoints:
        return []
    from squall.coordination.etcd_http import EtcdGateway, EtcdRefused, shown
    from squall.coordination.etcd_http import Status as EtcdStatus

    state: dict[str, Any] = {}

    async def connect() -> str:
        answered: list[EtcdStatus] = []
        failures: list[str] = []
        for endpoint in etcd.endpoints:
            try:
                async with EtcdGateway(endpoint, etcd) as gateway:
                    answered.append(await gateway.status())
            except Exception as exc:
                failures.append(f"{shown(endpoint)}: {type(exc).__name__} {exc}".strip())
        if not answered:
            raise Failed("no etcd endpoint answers: " + "; ".join(failures),
                         "check SQUALL_ETCD_ENDPOINTS (host:2379) and that etcd runs; "
                         "for TLS set SQUALL_ETCD_CA_FILE")  # fmt: skip
        state["status"], state["endpoint"] = answered[0], answered[0].endpoint
        down = f"; not answering: {'; '.join(failures)}" if failures else ""
        count = f"{len(answered)}/{len(etcd.endpoints)}"
        return f"{count} endpoint(s) answer, etcd {answered[0].version}{down}"

    async def authenticate() -> str:
        if not etcd.username:
            return "no user configured (etcd without authentication)"
        async with EtcdGateway(state["endpoint"], etcd) as gateway:
            try:
                await gateway.login()
            except EtcdRefused as exc:
                raise Failed(f"etcd refused the login of user {etcd.username!r}: {exc}",
                             "check SQUALL_ETCD_USERNAME and SQUALL_ETCD_PASSWORD against "
                             "`etcdctl user list`") from exc  # fmt: skip
        return f"logged in as {etcd.username!r}"

    async def lease() -> str:
        async with EtcdGateway(state["endpoint"], etcd) as gateway:
            await gateway.login()
            try:
                seconds = await gateway.lease_round_trip(f"{etcd.prefix}/doctor/{uuid.uuid4().hex}")
            except EtcdRefused as exc:
                raise Failed(
                    f"lease round trip refused: {exc}",
                    f"grant the user read/write on "
                    f"the prefix {etcd.prefix}/ (etcdctl role grant-permission)",
                ) from exc
        return f"lease granted, key written, read back and revoked in {seconds * 1000:.0f} ms"

    async def clock() -> str:
        skew = state["status"].skew_s
        if abs(skew) > CLOCK_SKEW_LIMIT_S:
            raise Failed(f"this machine's clock is {abs(skew):.1f} s "
                         f"{'behind' if skew > 0 else 'ahead of'} etcd's",
                         "synchronise clocks (NTP/chrony) on every node: alarm ticks and lease "
                         "timing depend on them")  # fmt: skip
        return f"within {CLOCK_SKEW_LIMIT_S:g} s of etcd's clock (measured {skew:+.1f} s, to ~1 s)"

    return [("etcd.connect", connect), ("etcd.authenticate", authenticate),
            ("etcd.lease", lease), ("clock.skew", clock)]  # fmt: skip


# -- stores ------------------------------------------------------------------------------------


def _store_steps(settings: Settings) -> list[list[Step]]:
    from squall.stores import select

    entity_url, activation_url = settings.entity_store_url, settings.activation_store_url
    stores: dict[str, Any] = {}

    async def entity_connect() -> str:
        stores["entity"] = store = select.entity_store(entity_url, settings.data_dir)
        await _started(store, store.start(), entity_url.variable)
        return f"{entity_url.redacted}: connected, schema up to date"

    async def entity_probe() -> str:
        return await _entity_probe(stores["entity"])

    async def activation_connect() -> str:
        from squall.stores.base import BatchedActivationStore

        stores["activation"] = store = select.activation_store(activation_url, settings.data_dir)
        await _started(store, store.start(), activation_url.variable)
        if isinstance(store, BatchedActivationStore):
            await _started(store, store.wait_ready(), activation_url.variable)
        return f"{activation_url.redacted}: connected, schema up to date"

    async def activation_probe() -> str:
        return await _activation_probe(stores["activation"])

    async def closing(step: Callable[[], Awaitable[str]], name: str) -> str:
        try:
            return await step()
        finally:
            if name in stores:
                await stores.pop(name).close()

    return [
        [("entity_store.connect", entity_connect),
         ("entity_store.probe", lambda: closing(entity_probe, "entity"))],
        [("activation_store.connect", activation_connect),
         ("activation_store.probe", lambda: closing(activation_probe, "activation"))],
    ]  # fmt: skip


async def _started(
    store: EntityStore | ActivationStore, work: Awaitable[Any], variable: str
) -> None:
    """Wait for a store to start; one that does not is closed again before the failure."""
    try:
        await _bounded(work, variable)
    except BaseException as exc:
        await store.close()
        if isinstance(exc, DependencyUnavailable):
            raise Failed(str(exc), f"make the store reachable (host, port, credentials, "
                         f"network policy) or set {variable} to one that is") from exc  # fmt: skip
        if isinstance(exc, StoreError):
            fix = (f"fix the store's schema or permissions, or set {variable} to another "
                   "store; `squall store migrate` applies the schema")  # fmt: skip
            raise Failed(str(exc), fix) from exc
        raise


async def _bounded(work: Awaitable[Any], variable: str, timeout_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await work
    except TimeoutError:
        raise Failed(f"no answer within {timeout_s:g} s",
                     f"check {variable}: host, port, credentials, firewall") from None  # fmt: skip


async def _entity_probe(store: EntityStore) -> str:
    namespace = f"_squall_doctor_{uuid.uuid4().hex[:12]}"
    record = SubjectRecord(namespace, namespace, str(uuid.uuid4()), "doctor-probe-not-a-key")
    await store.put_subject(record)
    try:
        read = await store.get_subject_by_namespace(namespace)
        if read is None or read.uuid != record.uuid:
            raise Failed("a probe record written could not be read back",
                         "check the store's replication or consistency settings")  # fmt: skip
    finally:
        deleted = await store.delete_subject(namespace)
    if not deleted:
        raise Failed("the probe record could not be deleted", "check the user's DELETE grant")
    return "probe record written, read back and deleted"


async def _activation_probe(store: ActivationStore) -> str:
    """The probe record starts at the epoch, so purging before 1 ms deletes it and nothing else."""
    activation_id = uuid.uuid4().hex
    namespace = "_squall_doctor"
    store.store({
        "namespace": namespace, "name": "probe", "version": "0.0.1", "subject": namespace,
        "activationId": activation_id, "start": 0, "end": 0, "duration": 0, "statusCode": 0,
        "response": {"status": "success", "statusCode": 0, "success": True, "result": {}},
        "logs": [], "annotations": [], "publish": False,
    })  # fmt: skip
    await store.flush()
    if await _read_back(store, namespace, activation_id) is None:
        raise Failed("a probe record written could not be read back",
                     "check the store's refresh or replication settings")  # fmt: skip
    await store.purge_before(1)
    return "probe record written, read back and deleted"


async def _read_back(store: ActivationStore, namespace: str, activation_id: str) -> Any:
    # Search-based stores make writes visible after a refresh; allow a moment, bounded.
    deadline = time.monotonic() + 5.0
    while True:
        found = await store.get(namespace, activation_id)
        if found is not None or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


# -- sandbox -----------------------------------------------------------------------------------


def _sandbox_steps() -> list[Step]:
    async def probe() -> str:
        from squall.platform import sandbox_root
        from squall.sandbox.process import ProcessSandboxFactory

        root = sandbox_root()
        factory = ProcessSandboxFactory(root)
        try:
            started = time.monotonic()
            await factory.start()
            return await _run_probe_action(factory, started)
        finally:
            await factory.close()
            shutil.rmtree(root, ignore_errors=True)

    return [("sandbox", probe)]


async def _run_probe_action(factory: Any, started: float) -> str:
    sandbox = await factory.create(SandboxSpec("python:3", 256, 1024 * 1024))
    try:
        init = await sandbox.init(InitPayload("doctor", "main", _PROBE_ACTION, False, {}), 10.0)
        if init.failure:
            raise Failed(f"the probe action did not initialise: {init.failure}")
        outcome = await sandbox.run(RunPayload({"probe": "ok"}, {}), 10.0)
    finally:
        await sandbox.destroy()
    if outcome.failure or b'"probe": "ok"' not in (outcome.response or b"").replace(
        b'":"', b'": "'
    ):
        raise Failed(f"the probe action answered {outcome.response!r} ({outcome.failure})",
                     "see the process log for why the zygote or sandbox failed")  # fmt: skip
    return f"zygote started, probe action ran ({(time.monotonic() - started) * 1000:.0f} ms)"


def exit_status(results: list[Result]) -> int:
    return 1 if any(result.status == "fail" for result in results) else 0
