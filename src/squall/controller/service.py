"""What the API does, apart from HTTP: entities with a cache, invokes, and blocking waits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from squall.abc import ActivationStore, Coordinator, EntityStore, MessageBus
from squall.config import SystemLimits
from squall.controller.auth import Identity
from squall.controller.cache import EntityCache
from squall.controller.errors import (
    ALREADY_EXISTS,
    CONCURRENT_MODIFICATION,
    INTERNAL_ERROR,
    NOT_FOUND,
    RESERVED_PARAMS,
    ApiError,
    not_authorized,
    too_large,
)
from squall.controller.http import new_transaction_id
from squall.controller.limits import NamespaceLimits, Throttles
from squall.controller.packages import Packages, ResolvedAction
from squall.controller.sequences import SequenceRun, Sequences
from squall.entities.action import Action, EntityTooLarge, InvalidEntity, build_action
from squall.entities.activation import (
    APPLICATION_ERROR,
    SUCCESS,
    WHISK_ERROR,
    ActivationResponse,
    build_record,
    is_activation_id,
    new_activation_id,
)
from squall.entities.names import EntityPath, IllegalName, parse_qualified
from squall.entities.package import Package
from squall.entities.rule import Rule, build_rule
from squall.entities.trigger import ACTIVE, INACTIVE, RuleLink, Trigger, build_trigger
from squall.errors import ConflictError
from squall.messages import (
    CACHE_TOPIC,
    SCHEDULER_TOPIC,
    ActivationMessage,
    CacheInvalidation,
    Completion,
    QueueKey,
    completed_topic,
)

log = logging.getLogger("squall.controller")

ACTIONS = "actions"
PACKAGES = "packages"
TRIGGERS = "triggers"
RULES = "rules"
# Read-modify-write of a trigger document races with other rule changes; retry this often.
TRIGGER_WRITE_ATTEMPTS = 5
THROTTLING = "throttling/"  # coordinator keys `throttling/{ns}/{action path}`
NO_SCHEDULER = ("No scheduler is available to take the activation; the platform is starting or "
                "every scheduler is down (see /readyz).")  # fmt: skip
RULE_NEEDS_TRIGGER = "Only rules with existing triggers can be activated"
# Triggers kept for the fire path (an alarm fires its trigger up to once a second). A change
# drops its copy at once here and, through the cache-invalidation broadcast, in the other
# processes; the TTL only bounds how long a lost invalidation could leave a copy stale.
TRIGGER_CACHE_SIZE = 10_000
TRIGGER_CACHE_TTL_S = 60.0

RulesEdit = Callable[[dict[str, RuleLink]], dict[str, RuleLink]]
# What an accepted invocation becomes: a message for the scheduler, or a sequence to run here.
Prepared = ActivationMessage | SequenceRun


class ControllerService:
    """Entity CRUD over the store, and the invoke path with completions from the bus."""

    def __init__(
        self,
        *,
        entities: EntityStore,
        activations: ActivationStore,
        bus: MessageBus,
        coordinator: Coordinator,
        limits: SystemLimits,
        kinds: frozenset[str],
        controller_id: str = "controller0",
        kind_aliases: dict[str, str] | None = None,
        route: Callable[[QueueKey], str | None] | None = None,
    ) -> None:
        self.entities, self.activations = entities, activations
        self._bus, self._coordinator = bus, coordinator
        self.limits, self.kinds, self.controller_id = limits, kinds, controller_id
        self._actions: dict[tuple[str, str], tuple[int, Action]] = {}
        self._triggers: EntityCache[str] = EntityCache(TRIGGER_CACHE_SIZE, TRIGGER_CACHE_TTL_S)
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._firing: set[str] = set()  # trigger activation ids being fired right now
        # Which scheduler's topic an activation goes to (its queue's owner in a cluster).
        self._route = route or (lambda _key: SCHEDULER_TOPIC)
        # Actions whose queue is over its retention limit, as flagged by their schedulers.
        self._throttled: frozenset[str] = frozenset()
        # Namespace limits: rates, concurrency, allowed kinds (`x:default` is its kind).
        self.throttles = Throttles(limits, kind_aliases)
        self.packages = Packages(entities, limits, self.get_action)
        self.sequences = Sequences(self)

    async def start(self) -> None:
        self._subscriptions = [
            self._bus.subscribe(
                completed_topic(self.controller_id), self.controller_id, self._completed
            ),
            # Each process its own group: every one of them hears every invalidation.
            self._bus.subscribe(CACHE_TOPIC, self.controller_id, self._invalidated),
            self._coordinator.watch_prefix(THROTTLING, self._throttling_changed),
        ]

    async def close(self) -> None:
        await self.sequences.close()
        for subscription in self._subscriptions:
            await subscription.close()

    def _throttling_changed(self, flags: Mapping[str, str]) -> None:
        self._throttled = frozenset(key.removeprefix(THROTTLING) for key in flags)

    def _invalidated(self, message: object) -> None:
        if isinstance(message, CacheInvalidation) and message.origin != self.controller_id:
            self._forget(message.path, message.name)

    def _forget(self, path: str, name: str) -> None:
        """Drop cached copies of the entity `path`/`name` (every one under `path` when `name`
        is empty). Names are unique per path across collections, so one message serves
        actions and triggers alike."""
        self._forget_actions(path, name)
        self._triggers.forget(path, name)

    def _forget_actions(self, path: str, name: str) -> None:
        if name:
            self._actions.pop((path, name), None)
        else:
            for key in [k for k in self._actions if k[0] == path]:
                del self._actions[key]

    def _changed(self, path: str, name: str) -> None:
        """Forget an entity here and tell the other processes to forget it too."""
        self._forget(path, name)
        self._bus.publish(CACHE_TOPIC, CacheInvalidation(path, name, self.controller_id))

    def _topic(self, message: ActivationMessage) -> str:
        topic = self._route(message.queue_key)
        if topic is None:
            self.throttles.completed(message.activation_id)
            raise ApiError(503, NO_SCHEDULER)
        return topic

    def receive(self, message: Completion) -> None:
        """A completion sent straight to this controller (`controller/completions.py`)."""
        self._completed(message)

    def _completed(self, message: object) -> None:
        if isinstance(message, Completion):
            self.throttles.completed(message.activation_id)
            waiter = self._waiters.pop(message.activation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.record)

    # -- actions ---------------------------------------------------------------------------

    async def get_action(self, path: EntityPath) -> tuple[int, Action]:
        """The action and its revision, from the cache when it is fresh."""
        cache_key = (path.path, path.name)
        cached = self._actions.get(cache_key)
        if cached is not None:
            return cached
        stored = await self.entities.get(ACTIONS, path.path, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        entry = (stored.revision, Action.from_json(stored.doc))
        self._actions[cache_key] = entry
        return entry

    async def put_action(
        self,
        path: EntityPath,
        body: Any,
        overwrite: bool,
        *,
        namespace_limits: NamespaceLimits | None = None,
    ) -> Action:
        """Create or update; `namespace_limits` narrows kinds and limit ranges (403 / 400)."""
        system = namespace_limits.actions if namespace_limits else self.limits
        await self.packages.require_container(path)
        existing = await self.entities.get(ACTIONS, path.path, path.name)
        if existing is not None and not overwrite:
            raise ApiError(409, ALREADY_EXISTS)
        previous = Action.from_json(existing.doc) if existing else None
        try:
            action = build_action(
                path.path, path.name, body, kinds=self.kinds, system=system, existing=previous
            )
            if namespace_limits is not None and not action.is_sequence:
                namespace_limits.check_kind(action.kind, self.throttles.kind_aliases)
        except InvalidEntity as exc:
            raise ApiError(400, str(exc)) from exc
        except EntityTooLarge as exc:
            raise ApiError(413, str(exc)) from exc
        if action.is_sequence:
            await self.sequences.check(path.namespace, path, action.components)
        try:
            await self.entities.put(
                ACTIONS,
                path.path,
                path.name,
                action.to_json(),
                existing.revision if existing else None,
            )
        except ConflictError as exc:
            message = ALREADY_EXISTS if existing is None else CONCURRENT_MODIFICATION
            raise ApiError(409, message) from exc
        finally:
            self._changed(path.path, path.name)
        return action

    async def delete_action(self, path: EntityPath) -> Action:
        _, action = await self.get_action(path)
        self._changed(path.path, path.name)
        if not await self.entities.delete(ACTIONS, path.path, path.name):
            raise ApiError(404, NOT_FOUND)
        return action

    async def delete_package(self, path: EntityPath, *, force: bool) -> Package:
        """Delete a package (with its actions when `force`), forgetting their cached copies."""
        package = await self.packages.delete(path, force=force)
        self._changed(f"{path.namespace}/{path.name}", "")
        return package

    async def resolve_action(self, caller: str, path: EntityPath) -> ResolvedAction:
        """The action as namespace `caller` reaches it, through packages and bindings."""
        return await self.packages.resolve(caller, path)

    # -- identities ------------------------------------------------------------------------

    async def system_identity(
        self, namespace: str, *, api_key: str | None = None
    ) -> Identity | None:
        """An Identity for `namespace` without its key, for callers other than HTTP (alarms).

        None when the namespace has no credentials. `api_key` (`uuid:key`) is not verified here:
        pass one only when it was checked already; actions then get it as __OW_API_KEY.
        """
        record = await self.entities.get_subject_by_namespace(namespace)
        if record is None:
            return None
        return Identity(record.namespace, record.subject, record.uuid, api_key, dict(record.limits))

    # -- triggers --------------------------------------------------------------------------

    async def get_trigger(self, path: EntityPath) -> Trigger:
        stored = await self.entities.get(TRIGGERS, path.path, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        return Trigger.from_json(stored.doc)

    async def put_trigger(self, path: EntityPath, body: Any, overwrite: bool) -> Trigger:
        try:
            return await self._put_trigger(path, body, overwrite)
        finally:  # also after a failed write: it may have reached the store
            self._changed(path.path, path.name)

    async def _put_trigger(self, path: EntityPath, body: Any, overwrite: bool) -> Trigger:
        for _ in range(TRIGGER_WRITE_ATTEMPTS):
            existing = await self.entities.get(TRIGGERS, path.path, path.name)
            if existing is not None and not overwrite:
                raise ApiError(409, ALREADY_EXISTS)
            previous = Trigger.from_json(existing.doc) if existing else None
            try:
                trigger = build_trigger(
                    path.path, path.name, body, system=self.limits, existing=previous
                )
            except InvalidEntity as exc:
                raise ApiError(400, str(exc)) from exc
            except EntityTooLarge as exc:
                raise ApiError(413, str(exc)) from exc
            revision = existing.revision if existing else None
            try:
                await self.entities.put(TRIGGERS, path.path, path.name, trigger.to_json(), revision)
            except ConflictError as exc:
                if existing is None:  # the name is taken, maybe by another kind of entity
                    raise ApiError(409, ALREADY_EXISTS) from exc
                continue  # a rule changed the rules map meanwhile: merge again
            return trigger
        raise ApiError(409, CONCURRENT_MODIFICATION)

    async def delete_trigger(self, path: EntityPath) -> Trigger:
        """Delete a trigger; its rules stay, as in OpenWhisk (they are inactive from now on)."""
        trigger = await self.get_trigger(path)
        try:
            deleted = await self.entities.delete(TRIGGERS, path.path, path.name)
        finally:
            self._changed(path.path, path.name)
        if not deleted:
            raise ApiError(404, NOT_FOUND)
        return trigger

    async def _trigger_for_fire(self, path: EntityPath) -> Trigger:
        """The trigger as a fire reads it: from the cache, else the store (then kept).

        The cache keeps a trigger's JSON as a string, which the garbage collector does not
        track, not the parsed Trigger: thousands of parsed triggers passing through it (60,000
        alarms through 10,000 entries) made each full collection walk their objects, and the
        alarm lag p99 of `alarms_spread` went from 18 ms to 66-78 ms. A string, not the bytes
        orjson.dumps returns: those keep orjson's whole output buffer (about 4 KiB or more
        for a small trigger, measured by RSS), the string only its text."""
        key = (path.path, path.name)
        cached = self._triggers.get(key)
        if cached is not None:
            return Trigger.from_json(orjson.loads(cached))
        generation = self._triggers.generation
        trigger = await self.get_trigger(path)
        self._triggers.put(key, orjson.dumps(trigger.to_json()).decode(), generation)
        return trigger

    async def fire_trigger(
        self,
        identity: Identity,
        path: EntityPath | str,
        payload: dict[str, Any],
        *,
        activation_id: str | None = None,
        check_ledger: bool = True,
        transaction_id: str = "",
    ) -> str | None:
        """Fire a trigger: invoke the action of every active rule, record one trigger activation.

        Returns the trigger activation id, or None when no rule is active (nothing is invoked
        and nothing recorded; the API answers 204). `path` may be `/ns/name`, `/_/name` or
        `name` (in the identity's namespace). Raises ApiError (404 no such trigger, 403 another
        namespace, 413 payload too large, 429 over the namespace's fires per minute).

        With `activation_id` (32 lowercase hex), the fire is idempotent and at most once: when a
        trigger activation with that id exists already, or is being fired right now, nothing
        happens and the id is returned; otherwise the record (the fire ledger entry) is durable
        before any rule's action is sent, so a crash can lose a tick's action runs but never
        repeat them. `check_ledger=False` skips looking for an existing record: for a caller
        that knows the id was never fired (an alarm tick it armed itself, first attempt).
        A trigger with no active rule answers None before the ledger is asked: such a fire
        records nothing and sends nothing, whether or not the id fired before.
        """
        if isinstance(path, str):
            try:
                path = parse_qualified(path, identity.namespace)
            except IllegalName as exc:
                raise ApiError(400, str(exc)) from exc
        if path.namespace != identity.namespace or path.package is not None:
            raise ApiError(403, not_authorized(path.qualified))
        tid = transaction_id or new_transaction_id()
        if activation_id is None:
            return await self._fire(identity, path, payload, new_activation_id(), tid)
        if not is_activation_id(activation_id):
            raise ValueError(f"not an activation id (32 lowercase hex): {activation_id!r}")
        # Claimed before the first await, so a concurrent fire with the same id sees it.
        if activation_id in self._firing:
            return activation_id
        self._firing.add(activation_id)
        try:
            trigger = None
            if check_ledger:
                # The rules first: a late or replayed tick of a trigger whose rules are all
                # inactive records nothing, so it costs no ledger round trip (a busy
                # scheduler's catch-up ticks are many). The trigger read is the fire's own.
                self._check_payload(payload)
                trigger = await self._trigger_for_fire(path)
                if not trigger.has_active_rule():
                    return None
                if await self.activations.get(identity.namespace, activation_id):
                    return activation_id
            return await self._fire(
                identity, path, payload, activation_id, tid, ledger=True, trigger=trigger
            )
        finally:
            self._firing.discard(activation_id)

    async def _fire(
        self,
        identity: Identity,
        path: EntityPath,
        payload: dict[str, Any],
        trigger_id: str,
        transaction_id: str,
        *,
        ledger: bool = False,
        trigger: Trigger | None = None,
    ) -> str | None:
        """Resolve every rule, record the trigger activation, then send the actions' messages.

        With `ledger`, the record is made durable before any action is sent: a crash in between
        loses those action runs but can never repeat them, so a tick fires at most once.
        `trigger`: read for this fire already (its payload checked too).
        """
        if trigger is None:
            self._check_payload(payload)
            trigger = await self._trigger_for_fire(path)
        if not trigger.has_active_rule():
            return None
        self.throttles.admit_fire(identity.namespace, identity.limits)
        start = int(time.time() * 1000)
        args = {**trigger.parameter_values(), **payload}
        results: list[dict[str, Any]] = []
        messages: list[Prepared] = []
        for rule, link in trigger.rules.items():
            result, message = await self._prepare_rule(
                identity, rule, link, args, trigger_id, transaction_id
            )
            results.append(result)
            if message is not None:
                messages.append(message)
        # The payload as result, one log line per rule (inactive ones too).
        logs = [orjson.dumps(result).decode() for result in results]
        self._store_fire(identity, trigger, trigger_id, start, ActivationResponse(SUCCESS, payload),
                         logs)  # fmt: skip
        if ledger:
            await self.activations.flush()
        for message in messages:
            await self._launch(message)
        return trigger_id

    async def record_throttled_fire(
        self,
        identity: Identity,
        path: EntityPath,
        payload: dict[str, Any],
        activation_id: str,
        message: str,
    ) -> None:
        """A fire refused by the fires-per-minute limit, kept as a trigger activation.

        For alarm ticks whose every attempt was throttled: the record (annotation
        `throttled: true`, the 429 message as its error) takes the tick's activation id, so a
        replay of the tick finds it and does not fire late. No action is invoked.
        """
        trigger = await self._trigger_for_fire(path)
        refused = ActivationResponse(APPLICATION_ERROR, {"error": message, "payload": payload})
        now = int(time.time() * 1000)
        throttled = [{"key": "throttled", "value": True}]
        self._store_fire(identity, trigger, activation_id, now, refused, [], throttled)
        await self.activations.flush()

    def _store_fire(
        self,
        identity: Identity,
        trigger: Trigger,
        activation_id: str,
        start: int,
        response: ActivationResponse,
        logs: list[str],
        annotations: list[dict[str, Any]] | None = None,
    ) -> None:
        """OpenWhisk's trigger activation: no end time and no duration (kept here as end =
        start, duration 0)."""
        self.activations.store(
            build_record(
                namespace=identity.namespace,
                name=trigger.name,
                version=trigger.version,
                subject=identity.subject,
                activation_id=activation_id,
                start=start,
                end=start,
                response=response,
                logs=logs,
                annotations=annotations or [],
            )
        )

    async def _prepare_rule(
        self,
        identity: Identity,
        rule: str,
        link: RuleLink,
        args: dict[str, Any],
        cause: str,
        transaction_id: str,
    ) -> tuple[dict[str, Any], Prepared | None]:
        """One rule's line in the trigger activation's logs, and its action's message if any."""
        action = link.action.qualified
        if not link.active:
            message = f"Rule '{rule}' is inactive, action '{action}' was not activated."
            return _rule_result(APPLICATION_ERROR, rule, action, error=message), None
        try:
            prepared = await self.prepare(
                identity,
                link.action,
                args,
                blocking=False,
                transaction_id=transaction_id,
                cause=cause,
            )
        except ApiError as exc:
            code = WHISK_ERROR if exc.status >= 500 else APPLICATION_ERROR
            return _rule_result(code, rule, action, error=exc.message), None
        except Exception:
            log.exception("rule %s could not invoke %s (trigger %s)", rule, action, cause)
            return _rule_result(WHISK_ERROR, rule, action, error=INTERNAL_ERROR), None
        result = _rule_result(SUCCESS, rule, action, activation_id=prepared.activation_id)
        return result, prepared

    async def _edit_rules(self, trigger: EntityPath, edit: RulesEdit) -> Trigger | None:
        """Apply `edit` to a trigger's rules map with optimistic concurrency; None if no trigger."""
        for _ in range(TRIGGER_WRITE_ATTEMPTS):
            stored = await self.entities.get(TRIGGERS, trigger.path, trigger.name)
            if stored is None:
                return None
            current = Trigger.from_json(stored.doc)
            rules = edit(dict(current.rules))
            if rules == current.rules:
                return current
            changed = current.with_rules(rules)
            try:
                await self.entities.put(
                    TRIGGERS, trigger.path, trigger.name, changed.to_json(), stored.revision
                )
            except ConflictError:
                continue
            finally:  # the rules map is part of the trigger: fires must see the change
                self._changed(trigger.path, trigger.name)
            return changed
        raise ApiError(409, CONCURRENT_MODIFICATION)

    # -- rules -----------------------------------------------------------------------------

    async def get_rule(self, path: EntityPath) -> Rule:
        """The rule, with its status read from its trigger (inactive without one)."""
        rule = await self._stored_rule(path)
        rule.status = await self._rule_status(rule)
        return rule

    async def list_rules(self, namespace: str, *, skip: int, limit: int) -> list[Rule]:
        stored = await self.entities.list(RULES, namespace, skip=skip, limit=limit)
        rules = [Rule.from_json(s.doc) for s in stored]
        triggers: dict[EntityPath, Trigger | None] = {}
        for rule in rules:
            if rule.trigger not in triggers:
                found = await self.entities.get(TRIGGERS, rule.trigger.path, rule.trigger.name)
                triggers[rule.trigger] = Trigger.from_json(found.doc) if found else None
            rule.status = _status_in(triggers[rule.trigger], rule)
        return rules

    async def put_rule(self, path: EntityPath, body: Any, overwrite: bool) -> Rule:
        stored = await self.entities.get(RULES, path.path, path.name)
        if stored is not None and not overwrite:
            raise ApiError(409, ALREADY_EXISTS)
        existing = Rule.from_json(stored.doc) if stored else None
        if existing is not None:
            # OpenWhisk keeps the status the old trigger had for the rule (inactive if none).
            existing.status = await self._rule_status(existing)
        try:
            rule = build_rule(path.namespace, path.name, body, existing=existing)
        except InvalidEntity as exc:
            raise ApiError(400, str(exc)) from exc
        await self._check_rule_references(rule)
        try:
            await self.entities.put(
                RULES, path.path, path.name, rule.to_doc(), stored.revision if stored else None
            )
        except ConflictError as exc:
            message = ALREADY_EXISTS if stored is None else CONCURRENT_MODIFICATION
            raise ApiError(409, message) from exc
        name, link = rule.qualified, RuleLink(rule.action, rule.status)
        if existing is not None and existing.trigger != rule.trigger:
            await self._edit_rules(existing.trigger, lambda rules: _without(rules, name))
        if await self._edit_rules(rule.trigger, lambda rules: {**rules, name: link}) is None:
            rule.status = INACTIVE  # the trigger was deleted in between
        return rule

    async def delete_rule(self, path: EntityPath) -> Rule:
        stored = await self.entities.get(RULES, path.path, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        rule = Rule.from_json(stored.doc)
        try:
            deleted = await self.entities.delete(RULES, path.path, path.name, stored.revision)
        except ConflictError as exc:
            raise ApiError(409, CONCURRENT_MODIFICATION) from exc
        if not deleted:
            raise ApiError(404, NOT_FOUND)
        name = rule.qualified
        await self._edit_rules(rule.trigger, lambda rules: _without(rules, name))
        rule.status = INACTIVE
        return rule

    async def set_rule_status(self, path: EntityPath, status: str) -> Rule:
        """Enable or disable a rule: its entry in its trigger's rules map."""
        rule = await self._stored_rule(path)
        link = RuleLink(rule.action, status)
        name = rule.qualified
        if await self._edit_rules(rule.trigger, lambda rules: {**rules, name: link}) is None:
            if status == ACTIVE:
                raise ApiError(404, RULE_NEEDS_TRIGGER)
            status = INACTIVE
        rule.status = status
        return rule

    async def _stored_rule(self, path: EntityPath) -> Rule:
        stored = await self.entities.get(RULES, path.path, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        return Rule.from_json(stored.doc)

    async def _rule_status(self, rule: Rule) -> str:
        stored = await self.entities.get(TRIGGERS, rule.trigger.path, rule.trigger.name)
        return _status_in(Trigger.from_json(stored.doc) if stored else None, rule)

    async def _check_rule_references(self, rule: Rule) -> None:
        """The trigger must be the caller's, the action one it may invoke (a packaged action,
        through a binding, or in another namespace's published package); 400 if missing."""
        trigger = rule.trigger
        if trigger.namespace != rule.namespace:
            raise ApiError(403, not_authorized(trigger.qualified))
        if await self.entities.get(TRIGGERS, trigger.path, trigger.name) is None:
            raise ApiError(400, f"trigger {trigger} does not exist")
        try:
            await self.resolve_action(rule.namespace, rule.action)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise ApiError(400, f"action {rule.action} does not exist") from exc

    # -- invoke ----------------------------------------------------------------------------

    async def invoke(
        self,
        identity: Identity,
        path: EntityPath,
        params: dict[str, Any],
        *,
        blocking: bool,
        wait_ms: int,
        transaction_id: str,
        cause: str | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Accept an activation; with `blocking`, wait up to `wait_ms` for its record."""
        prepared = await self.prepare(
            identity, path, params, blocking=blocking, transaction_id=transaction_id, cause=cause
        )
        activation_id = prepared.activation_id
        if isinstance(prepared, SequenceRun):
            record = await self.sequences.launch(prepared, blocking=blocking, wait_ms=wait_ms)
            return activation_id, record
        if not blocking:
            self._bus.publish(self._topic(prepared), prepared)
            return activation_id, None
        return activation_id, await self.send_and_wait(prepared, wait_ms)

    async def _launch(self, prepared: Prepared) -> None:
        """Start an invocation without waiting for it."""
        if isinstance(prepared, SequenceRun):
            await self.sequences.launch(prepared, blocking=False, wait_ms=0)
        else:
            self._bus.publish(self._topic(prepared), prepared)

    async def send_and_wait(
        self, message: ActivationMessage, wait_ms: int
    ) -> dict[str, Any] | None:
        """Publish a blocking activation and wait up to `wait_ms` for its record (None after)."""
        activation_id = message.activation_id
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        topic = self._topic(message)
        self._waiters[activation_id] = waiter
        self._bus.publish(topic, message)
        # A bare timer instead of asyncio.wait_for: this runs once per blocking invoke.
        timer = loop.call_later(wait_ms / 1000, _give_up, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiters.pop(activation_id, None)

    async def prepare(
        self,
        identity: Identity,
        path: EntityPath,
        params: dict[str, Any],
        *,
        blocking: bool,
        transaction_id: str,
        cause: str | None = None,
        in_sequence: bool = False,
    ) -> Prepared:
        """Everything an invoke checks (action, payload, final parameters, throttles), up to
        the message to send, or the sequence to run. `in_sequence`: a sequence's component,
        whose input is the previous component's result."""
        resolved = await self.resolve_action(identity.namespace, path)
        action = resolved.action
        self._check_payload(params)
        if not in_sequence and params and not resolved.immutable_parameters().isdisjoint(params):
            raise ApiError(400, RESERVED_PARAMS)
        content = {**action.parameter_values(), **params} if action.parameters else params
        if action.is_sequence:
            return SequenceRun(
                new_activation_id(), identity, resolved, content, transaction_id, cause
            )
        if self._throttled and f"{identity.namespace}/{action.qualified}" in self._throttled:
            raise ApiError(429, "Too many requests")
        extra: list[dict[str, Any]] = []
        if in_sequence:
            extra.append({"key": "causedBy", "value": "sequence"})
        if resolved.binding:
            extra.append({"key": "binding", "value": resolved.binding})
        # Every atomic run counts, a sequence's components too: each is an activation in flight.
        activation_id = new_activation_id()
        self.throttles.admit_invocation(
            identity.namespace, identity.limits, action.kind, activation_id, action.limits.timeout
        )
        return ActivationMessage(
            activation_id=activation_id,
            transaction_id=transaction_id,
            invocation_namespace=identity.namespace,
            subject=identity.subject,
            action=action,
            revision=resolved.revision,
            content=content,
            blocking=blocking,
            controller_id=self.controller_id,
            received_ms=int(time.time() * 1000),
            api_key=identity.api_key,
            cause=cause,
            extra_annotations=extra,
        )

    def _check_payload(self, params: dict[str, Any]) -> None:
        if not params:
            return
        size = len(orjson.dumps(params))
        if size > self.limits.payload_bytes:
            raise ApiError(413, too_large("request", size, self.limits.payload_bytes))


def _rule_result(
    status_code: int,
    rule: str,
    action: str,
    *,
    activation_id: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One line of a trigger activation's logs, as OpenWhisk's RuleActivationResult."""
    result: dict[str, Any] = {"statusCode": status_code, "success": status_code == SUCCESS}
    if activation_id is not None:
        result["activationId"] = activation_id
    else:
        result["error"] = error
    result.update(rule=rule, action=action)
    return result


def _status_in(trigger: Trigger | None, rule: Rule) -> str:
    link = trigger.rules.get(rule.qualified) if trigger else None
    return link.status if link is not None else INACTIVE


def _without(rules: dict[str, RuleLink], name: str) -> dict[str, RuleLink]:
    return {k: v for k, v in rules.items() if k != name}


def _give_up(waiter: asyncio.Future[dict[str, Any] | None]) -> None:
    """The blocking wait is over: the caller gets 202 and polls for the record."""
    if not waiter.done():
        waiter.set_result(None)
