"""OpenWhisk's `/whisk.system/alarms` package, served in-process by the controller.

In OpenWhisk the feed actions `alarm`, `interval` and `once` call a separate alarms provider
over HTTP with the trigger owner's key, which the provider stores to fire the trigger later.
Squall's feed actions go straight to the scheduler's AlarmService and fire triggers in-process
as the owning namespace: no key is ever stored with an alarm.

The feed protocol is OpenWhisk's: a (blocking) invoke with `lifecycleEvent` CREATE, READ,
UPDATE, DELETE, PAUSE or UNPAUSE, `triggerName` (`/ns/name` or `/_/name`), `authKey`, plus the
feed's parameters. So `wsk trigger create T --feed /whisk.system/alarms/alarm -p cron ...` and
the JavaScript client's `feeds.create` work unchanged.

The feed actions manage alarms through one seam, `squall.abc.AlarmAdmin`: standalone the
AlarmService in this process (`LocalAlarms`), in a cluster the scheduler owning the alarm's
shard (`RemoteAlarms`). When no scheduler owns that shard for a few seconds (a failover in
progress) the feed call is answered 503 with Retry-After, not as a failed activation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from squall.abc import AlarmAdmin
from squall.alarms import (
    Alarm,
    AlarmService,
    AlarmValidationError,
    FireResult,
)
from squall.alarms.admin import LocalAlarms
from squall.alarms.remote import AlarmsUnavailable
from squall.controller.auth import Identity
from squall.controller.errors import RETRY_AFTER, ApiError
from squall.controller.service import ControllerService
from squall.entities.activation import (
    APPLICATION_ERROR,
    SUCCESS,
    ActivationResponse,
    build_record,
    new_activation_id,
)
from squall.entities.names import EntityPath, IllegalName, parse_qualified
from squall.errors import ConflictError, NotFoundError

log = logging.getLogger("squall.feeds")

SYSTEM_NAMESPACE = "whisk.system"
ALARMS_PACKAGE = "alarms"
# Feed action name -> the alarm kind it creates.
FEEDS = {"alarm": "cron", "interval": "interval", "once": "once"}
FEED_ANNOTATION = "feed"
IDENTITY_TTL_S = 10.0


class FeedError(Exception):
    """The feed action fails: an application error with this message."""


def is_alarm_feed(namespace: str, package: str | None, name: str) -> bool:
    return namespace == SYSTEM_NAMESPACE and package == ALARMS_PACKAGE and name in FEEDS


class AlarmFeeds:
    """The feed actions, and the bridge from alarm ticks to trigger fires."""

    def __init__(self, controller: ControllerService) -> None:
        self._controller = controller
        self.alarms: AlarmAdmin | None = None
        # Namespace -> (expiry, identity): every tick of every alarm needs one, and they
        # rarely change; a deleted namespace is noticed within IDENTITY_TTL_S.
        self._identities: dict[str, tuple[float, Identity | None]] = {}
        # One read per namespace at a time: when an entry expires, the thousand ticks due in
        # that second wait for the same read instead of each making its own.
        self._identity_reads: dict[str, asyncio.Future[Identity | None]] = {}

    def attach(self, alarms: AlarmService | AlarmAdmin) -> None:
        """The alarms the feed actions manage: this process's AlarmService, or (in a cluster)
        any AlarmAdmin such as RemoteAlarms."""
        self.alarms = LocalAlarms(alarms) if isinstance(alarms, AlarmService) else alarms

    # -- the feed actions ------------------------------------------------------------------

    async def invoke(
        self, identity: Identity, feed: str, params: dict[str, Any], transaction_id: str
    ) -> dict[str, Any]:
        """Run a feed action for `identity`; returns its activation record (stored)."""
        start = int(time.time() * 1000)
        try:
            result = await self._lifecycle(identity, feed, params)
            response = ActivationResponse(SUCCESS, result)
        except (FeedError, AlarmValidationError) as exc:
            response = ActivationResponse(APPLICATION_ERROR, {"error": str(exc)})
        except AlarmsUnavailable as exc:  # a failover in progress: the client retries
            raise ApiError(503, str(exc), dict(RETRY_AFTER)) from exc
        record = build_record(
            namespace=identity.namespace,
            name=feed,
            version="0.0.1",
            subject=identity.subject,
            activation_id=new_activation_id(),
            start=start,
            end=int(time.time() * 1000),
            response=response,
            logs=[],
            annotations=[
                {"key": "path", "value": f"{SYSTEM_NAMESPACE}/{ALARMS_PACKAGE}/{feed}"},
                {"key": "kind", "value": "builtin"},
            ],
        )
        self._controller.activations.store(record)
        return record

    async def _lifecycle(self, identity: Identity, feed: str, params: dict[str, Any]) -> Any:
        alarms = self._service()
        event = str(params.get("lifecycleEvent", "")).upper()
        trigger = await self._trigger(identity, params.get("triggerName"))
        namespace, name = trigger.namespace, trigger.name
        missing = FeedError(f"trigger /{trigger.qualified} has no alarm")
        try:
            if event == "CREATE":
                await alarms.create(namespace, name, FEEDS[feed], params)
                return {"status": "success", "trigger": f"/{trigger.qualified}"}
            if event == "READ":
                view = await alarms.read(namespace, name)
                if view is None:
                    raise missing
                return view
            if event == "UPDATE":
                return await alarms.update(namespace, name, params)
            if event == "DELETE":
                if not await alarms.delete(namespace, name):
                    raise missing
                return {"status": "success", "trigger": f"/{trigger.qualified}"}
            if event in ("PAUSE", "UNPAUSE"):
                change = alarms.pause if event == "PAUSE" else alarms.resume
                return await change(namespace, name)
        except ConflictError as exc:
            raise FeedError(f"trigger /{trigger.qualified} already has an alarm") from exc
        except NotFoundError as exc:
            raise missing from exc
        raise FeedError(
            "lifecycleEvent must be one of CREATE, READ, UPDATE, DELETE, PAUSE, UNPAUSE"
        )

    async def _trigger(self, identity: Identity, name: Any) -> EntityPath:
        if not isinstance(name, str) or not name:
            raise FeedError("the triggerName parameter is missing")
        try:
            path = parse_qualified(name, identity.namespace)
        except IllegalName as exc:
            raise FeedError(str(exc)) from exc
        if path.namespace != identity.namespace or path.package is not None:
            raise FeedError(f"the supplied authentication is not authorized to access '{name}'")
        try:
            await self._controller.get_trigger(path)
        except ApiError as exc:
            raise FeedError(f"trigger /{path.qualified} does not exist") from exc
        return path

    def _service(self) -> AlarmAdmin:
        if self.alarms is None:
            raise FeedError("the alarms service is not running")
        return self.alarms

    async def forget(self, namespace: str, trigger: str) -> None:
        """The trigger was deleted: drop its alarm, if it had one."""
        if self.alarms is None:
            return
        try:
            if await self.alarms.read(namespace, trigger) is not None:
                await self.alarms.delete(namespace, trigger)
        except AlarmsUnavailable as exc:
            raise ApiError(
                503,
                f"the trigger was deleted but its alarm could not be removed now: {exc}",
                dict(RETRY_AFTER),
            ) from exc

    # -- from alarm ticks to trigger fires -------------------------------------------------

    async def fire(
        self, alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
    ) -> FireResult:
        """The AlarmService's fire callback: an idempotent trigger fire as the namespace."""
        identity = await self._identity(alarm.namespace)
        if identity is None:
            return FireResult.trigger_gone(404, f"namespace {alarm.namespace} no longer exists")
        path = EntityPath(alarm.namespace, None, alarm.trigger)
        try:
            fired = await self._controller.fire_trigger(
                identity,
                path,
                dict(alarm.payload),
                activation_id=activation_id,
                check_ledger=maybe_fired,
            )
        except ApiError as exc:
            return _classify(exc)
        return FireResult.fired() if fired is not None else FireResult.no_active_rules()

    async def record_throttled(
        self, alarm: Alarm, tick: datetime, activation_id: str, message: str
    ) -> None:
        """The AlarmService gave up on a throttled tick: record it as a throttled activation."""
        identity = await self._identity(alarm.namespace)
        if identity is None:
            return
        path = EntityPath(alarm.namespace, None, alarm.trigger)
        await self._controller.record_throttled_fire(
            identity, path, dict(alarm.payload), activation_id, message
        )

    async def _identity(self, namespace: str) -> Identity | None:
        cached = self._identities.get(namespace)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        reading = self._identity_reads.get(namespace)
        if reading is None:
            reading = asyncio.ensure_future(self._read_identity(namespace))
            self._identity_reads[namespace] = reading
            reading.add_done_callback(lambda done: self._identity_read(namespace, done))
        # Shielded: a fire that times out does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    def _identity_read(self, namespace: str, done: asyncio.Future[Identity | None]) -> None:
        self._identity_reads.pop(namespace, None)
        if not done.cancelled():
            done.exception()  # retrieved: its waiters got it, or all of them were cancelled

    async def _read_identity(self, namespace: str) -> Identity | None:
        identity = await self._controller.system_identity(namespace)
        self._identities[namespace] = (time.monotonic() + IDENTITY_TTL_S, identity)
        return identity

    async def delete_after_fire(self, alarm: Alarm, what: str) -> None:
        """A once-alarm with deleteAfterFire: remove its trigger (and its rules for "rules")."""
        path = EntityPath(alarm.namespace, None, alarm.trigger)
        try:
            trigger = await self._controller.get_trigger(path)
        except ApiError:
            return  # already gone
        if what == "rules":
            for rule_name in list(trigger.rules):
                try:
                    rule_path = parse_qualified("/" + rule_name, alarm.namespace)
                    await self._controller.delete_rule(rule_path)
                except (ApiError, IllegalName, NotFoundError):
                    log.info("rule %s of %s was already gone", rule_name, alarm.id)
        try:
            await self._controller.delete_trigger(path)
        except ApiError:
            log.info("trigger %s was already gone", alarm.id)


def _classify(exc: ApiError) -> FireResult:
    """OpenWhisk's provider: 429 backs off, other 4xx (but 408/409) disable, the rest retry."""
    if exc.status == 429:
        return FireResult.throttled(message=exc.message)
    if 400 <= exc.status < 500 and exc.status not in (408, 409):
        return FireResult.trigger_gone(exc.status, exc.message)
    return FireResult.failed(exc.message, exc.status)
