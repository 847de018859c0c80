"""Readiness: one check per dependency of this process, each with its state, reason and fix.

Answering `/readyz` never touches a store: the checks read state the components keep anyway
(`unavailable_reason`, `durations_degraded`, the alarm service's state, the zygote) plus the
outcome of a background probe, a point read on each store every few seconds. A Kubernetes
probe every second therefore costs the stores nothing, and a store that hangs cannot hang it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from squall.abc import ActivationStore, EntityStore, SandboxFactory
from squall.alarms import AlarmService
from squall.config import Settings
from squall.scheduler.service import SchedulerService
from squall.stores.select import StoreURL
from squall.stores.urls import redact

log = logging.getLogger("squall.ops")

State = Literal["ok", "degraded", "unavailable", "starting"]
STATES: tuple[State, ...] = ("ok", "degraded", "unavailable", "starting")
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 3.0
# A store probe looks up a name no entity or activation has: it reads an index, finds nothing.
_PROBE_NAMESPACE = "guest"
_PROBE_ACTIVATION_ID = "0" * 32
_WHILE_DOWN = {
    "entity_store": "requests that need it answer 503",
    "activation_store": "activation records are buffered (up to SQUALL_ACTIVATION_BUFFER_MAX) "
    "and written once it answers",
}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"(),]+")


@dataclass(frozen=True, slots=True)
class Check:
    """The state of one dependency; `degraded` still counts as ready (it works, less well)."""

    state: State
    reason: str | None = None
    fix: str | None = None

    @property
    def ready(self) -> bool:
        return self.state in ("ok", "degraded")

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "state": self.state, "reason": self.reason, "fix": self.fix}


OK = Check("ok")
NOT_PROBED = Check("starting", "not checked yet")


def scrub(text: str) -> str:
    """Any URL in `text` without its password: reasons come from drivers, which may quote
    the connection string they were given."""
    return _URL.sub(lambda match: redact(match.group(0)), text)


class Monitor(Protocol):
    """A dependency checked in the background (ops.dependencies): Kafka, etcd."""

    name: str

    def check(self) -> Check: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Readiness:
    """The checks of a standalone process (entity and activation stores, scheduler durations,
    alarms, sandbox), kept current by a background probe of the stores."""

    def __init__(
        self,
        settings: Settings,
        *,
        entities: EntityStore | None,
        activations: ActivationStore,
        scheduler: SchedulerService | None,
        alarms: AlarmService | None,
        sandboxes: SandboxFactory | None,
        probe_interval_s: float = PROBE_INTERVAL_S,
        monitors: Sequence[Monitor] = (),
        cluster: Callable[[], dict[str, Check]] | None = None,
    ) -> None:
        """Components a role does not run are None and have no check; `cluster` adds the
        checks of a role process (coordination, bus, the members it depends on)."""
        self._settings = settings
        self._entities, self._activations = entities, activations
        self._scheduler, self._alarms, self._sandboxes = scheduler, alarms, sandboxes
        self._interval = probe_interval_s
        stores = ("entity_store", "activation_store") if entities else ("activation_store",)
        self._probed = dict.fromkeys(stores, NOT_PROBED)
        self._cluster = cluster
        # Set by the platform once every component has started: until then a process whose
        # dependencies all answer is still not ready (its API answers 503 meanwhile).
        self.started = False
        self._task: asyncio.Task[None] | None = None
        self._monitors = tuple(monitors)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe once now (so a started platform reports the truth at once), then periodically."""
        await self.probe()
        self._task = asyncio.create_task(self._probe_forever(), name="squall-readiness-probe")

    async def start_monitors(self) -> None:
        """Begin checking Kafka and etcd; first thing at start, so /readyz tells about them
        even while a store keeps the rest of the start waiting."""
        for monitor in self._monitors:
            await monitor.start()

    def note(self, name: str, check: Check) -> None:
        """What the start learned about a store before the probe runs (e.g. it is unreachable)."""
        self._remember(name, check)

    async def close(self) -> None:
        for monitor in self._monitors:
            await monitor.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe()

    async def probe(self) -> None:
        """Point-read each store once, remembering the outcome (and logging changes once)."""
        probes: dict[str, tuple[StoreURL, Coroutine[Any, Any, object]]] = {
            "activation_store": (
                self._settings.activation_store_url,
                self._activations.get(_PROBE_NAMESPACE, _PROBE_ACTIVATION_ID),
            )
        }
        if self._entities is not None:
            probes["entity_store"] = (
                self._settings.entity_store_url,
                self._entities.get_subject_by_namespace(_PROBE_NAMESPACE),
            )
        results = await asyncio.gather(*(_probe(call) for _, call in probes.values()))
        for (name, (url, _)), reason in zip(probes.items(), results, strict=True):
            check = OK if reason is None else Check("unavailable", reason, store_fix(name, url))
            self._remember(name, check)

    def _remember(self, name: str, check: Check) -> None:
        before = self._probed[name]
        self._probed[name] = check
        if check.ready and before.state == "unavailable":
            log.warning("readiness: %s is ok again", name)
        elif check.state == "unavailable" and before.reason != check.reason:
            log.warning("readiness: %s is unavailable: %s", name, check.reason)

    # -- the report ----------------------------------------------------------------------------

    def checks(self) -> dict[str, Check]:
        checks: dict[str, Check] = {}
        if self._entities is not None:
            checks["entity_store"] = self._probed["entity_store"]
        checks["activation_store"] = self._activation_store()
        if self._scheduler is not None:
            checks["scheduler_durations"] = self._scheduler_durations(self._scheduler)
        if self._alarms is not None:
            checks["alarms"] = self._alarm_check(self._alarms)
        if self._sandboxes is not None:
            checks["sandbox"] = self._sandbox(self._sandboxes)
        checks.update((monitor.name, monitor.check()) for monitor in self._monitors)
        if self._cluster is not None:
            checks.update(self._cluster())
        if not self.started:
            checks["startup"] = Check("starting", "the platform's components are starting", None)
        return checks

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the `/readyz` body): ready when every check is ok or degraded."""
        checks = self.checks()
        ready = all(check.ready for check in checks.values())
        return ready, {"ready": ready, "checks": {k: c.to_json() for k, c in checks.items()}}

    def _activation_store(self) -> Check:
        # The store's own flag is set by any failed write or read, between probes too.
        reason = getattr(self._activations, "unavailable_reason", None)
        if reason is None:
            return self._probed["activation_store"]
        url = self._settings.activation_store_url
        return Check("unavailable", scrub(str(reason)), store_fix("activation_store", url))

    @staticmethod
    def _scheduler_durations(scheduler: SchedulerService) -> Check:
        reason = scheduler.durations_degraded
        if reason is None:
            return OK
        return Check(
            "degraded",
            scrub(f"the activation store cannot answer duration statistics: {reason}"),
            "scheduling uses the durations containers report meanwhile; "
            "see the activation_store check",
        )

    @staticmethod
    def _alarm_check(alarms: AlarmService) -> Check:
        state = alarms.state
        if state == "running":
            return OK
        if state == "starting":
            return Check("starting", "loading alarms from the entity store", None)
        return Check("unavailable", "the alarm service is shutting down", None)

    @staticmethod
    def _sandbox(sandboxes: SandboxFactory) -> Check:
        alive = getattr(sandboxes, "zygote_alive", True)
        if alive is None:
            return Check("starting", "the sandbox zygote has not started yet", None)
        if alive:
            return OK
        return Check(
            "unavailable",
            "the sandbox zygote is not running",
            "a new zygote starts with the next container; the log says why the last one exited",
        )


async def _probe(call: Any) -> str | None:
    """None when the awaitable answers in time, else why not (without secrets)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await call
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure is the answer: the store cannot serve reads
        return scrub(str(exc)) or type(exc).__name__
    return None


def store_fix(name: str, url: StoreURL) -> str:
    """What the operator should do; names the setting and the (redacted) URL in use."""
    action = _WHILE_DOWN[name]
    return (
        f"make {url.redacted} reachable with the right credentials, or set {url.variable} to a "
        f"store that is; {action}. Squall reconnects by itself, no restart needed"
    )
