"""The alarm: what OpenWhisk's alarms feed stores for a trigger, plus Squall's firing state.

An `Alarm` is immutable; every change makes a new one (`dataclasses.replace`), so the service can
hand alarms to callbacks without copying. `from_params` and `updated` validate the feed's CREATE
and UPDATE parameters with OpenWhisk's messages (raising AlarmValidationError, a ValueError
meant to become HTTP 400); `to_doc`/`from_doc` are the JSON document kept in the entity store.

Also here, because they are pure and the service's correctness rests on them:
  * `activation_id_for(alarm_id, tick)`: the deterministic activation id of one tick, which makes
    a repeated fire of the same tick (crash after firing, before persisting) harmless;
  * `jitter_offset`: the deterministic per-tick delay (a replayed tick is due at the same instant);
  * `plan_next`: which tick to fire next when ticks were missed, per the misfire policy.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal, cast

from squall.alarms.schedule import (
    ONE_MICROSECOND,
    AlarmValidationError,
    Cron,
    Interval,
    Once,
    Schedule,
    Window,
    ensure_utc,
    has_seconds_granularity,
    parse_date,
    parse_minutes,
    parse_timezone,
)

__all__ = [
    "DEFAULT_CATCHUP_WINDOW_S",
    "MAX_JITTER_S",
    "Alarm",
    "AlarmKind",
    "AlarmStatus",
    "DeleteAfterFire",
    "LastFire",
    "MisfirePolicy",
    "Plan",
    "StatusReason",
    "activation_id_for",
    "epoch_ms",
    "jitter_offset",
    "js_iso",
    "plan_next",
]

JSONDict = dict[str, Any]
MisfirePolicy = Literal["skip", "fire_once", "fire_all"]
DeleteAfterFire = Literal["false", "true", "rules"]
ReasonKind = Literal["AUTO", "ADMIN", "USER"]

MISFIRE_POLICIES: tuple[MisfirePolicy, ...] = ("skip", "fire_once", "fire_all")
DELETE_AFTER_FIRE: tuple[DeleteAfterFire, ...] = ("false", "true", "rules")
DEFAULT_CATCHUP_WINDOW_S = 3600.0
MAX_CATCHUP_WINDOW_S = 7 * 24 * 3600.0
MAX_JITTER_S = 3600.0
INTERVAL_DEFAULT_START = timedelta(seconds=30)  # OpenWhisk: startDate defaults to now + 30 s
DOC_SCHEMA = 1
# Missed ticks counted one by one at most; beyond, the count is extrapolated (`Plan.capped`).
COUNT_CAP = 8
SKIP_WALK_CAP = 100_000


class AlarmKind(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    ONCE = "once"


# OpenWhisk's automatic-disable messages (openwhisk-package-alarms provider/lib/utils.js).
MSG_FIRED_ONCE = "Automatically disabled after firing once"
MSG_LAST_CRON = "Automatically disabled after firing last scheduled cron trigger"
MSG_LAST_INTERVAL = "Automatically disabled after firing last scheduled interval trigger"
MSG_MAX_TRIGGERS = "Automatically disabled after reaching max triggers"


def msg_status_code(status_code: int) -> str:
    return (
        f"Automatically disabled after receiving a {status_code} status code "
        "when firing the trigger"
    )


@dataclass(frozen=True, slots=True)
class StatusReason:
    """Why an alarm is not active: OpenWhisk's `{kind: AUTO|ADMIN, statusCode, message}`."""

    kind: ReasonKind
    message: str
    status_code: int | None = None

    def to_json(self) -> JSONDict:
        out: JSONDict = {"kind": self.kind, "message": self.message}
        if self.status_code is not None:
            out["statusCode"] = self.status_code
        return out

    @classmethod
    def from_json(cls, value: Any) -> StatusReason | None:
        if not isinstance(value, dict):
            return None
        kind = value.get("kind") if value.get("kind") in ("AUTO", "ADMIN", "USER") else "AUTO"
        code = value.get("statusCode")
        return cls(
            cast(ReasonKind, kind),
            str(value.get("message", "")),
            code if isinstance(code, int) else None,
        )


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """`active` false means the alarm ended or was disabled (with `reason`); `paused` is a
    user's temporary hold that keeps the alarm active but fires nothing."""

    active: bool = True
    paused: bool = False
    reason: StatusReason | None = None
    date_changed: datetime | None = None


@dataclass(frozen=True, slots=True)
class LastFire:
    """The most recent fire of an alarm."""

    tick: datetime  # the scheduled tick (what the activation id is derived from)
    fired_at: datetime  # when the fire callback was first called
    lag_ms: float  # fired_at minus the tick's due instant (tick + jitter)
    activation_id: str
    outcome: str  # a FireOutcome value
    attempts: int = 1
    catchup: bool = False  # a missed tick fired late by the misfire policy

    def to_json(self) -> JSONDict:
        return {
            "tick": _iso(self.tick),
            "firedAt": _iso(self.fired_at),
            "lagMs": round(self.lag_ms, 3),
            "activationId": self.activation_id,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "catchup": self.catchup,
        }

    @classmethod
    def from_json(cls, value: Any) -> LastFire | None:
        if not isinstance(value, dict):
            return None
        return cls(
            tick=_from_iso(value["tick"]),
            fired_at=_from_iso(value["firedAt"]),
            lag_ms=float(value.get("lagMs", 0.0)),
            activation_id=str(value["activationId"]),
            outcome=sys.intern(str(value.get("outcome", "fired"))),
            attempts=int(value.get("attempts", 1)),
            catchup=bool(value.get("catchup", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    """One alarm trigger feed. Treat `payload` as read-only."""

    namespace: str
    trigger: str
    kind: AlarmKind
    payload: JSONDict = field(default_factory=dict)
    # schedule parameters (which ones apply depends on `kind`)
    cron: str | None = None
    timezone: str | None = None
    strict: bool | None = None
    minutes: int | None = None
    date: datetime | None = None
    start_date: datetime | None = None
    stop_date: datetime | None = None
    max_triggers: int | None = None  # None: unlimited (OpenWhisk's -1)
    delete_after_fire: DeleteAfterFire = "false"
    # Squall's firing policy
    misfire: MisfirePolicy = "fire_once"
    catchup_window_s: float = DEFAULT_CATCHUP_WINDOW_S
    jitter_s: float = 0.0
    # state
    status: AlarmStatus = field(default_factory=AlarmStatus)
    last_fire: LastFire | None = None
    fires_count: int = 0  # fires delivered since creation or the last update
    next_tick: datetime | None = None  # the next tick to fire; persisted only after a fire
    config_version: int = 1  # grows on every user change (create, update, pause, resume)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.trigger}"

    # -- schedule ------------------------------------------------------------------------------

    def schedule(self) -> Schedule:
        """The fire times, bounded by startDate and stopDate (not by maxTriggers)."""
        return _schedule(
            self.kind,
            self.cron,
            self.timezone,
            self.minutes,
            self.date,
            self.start_date,
            self.stop_date,
        )

    def triggers_left(self) -> int | None:
        """Fires left before maxTriggers; None when unlimited."""
        if self.max_triggers is None:
            return None
        return max(self.max_triggers - self.fires_count, 0)

    def next_tick_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after `t`, None when the alarm has no more ticks."""
        if self.triggers_left() == 0:
            return None
        return self.schedule().next_after(t)

    def due_at(self, tick: datetime) -> datetime:
        """When `tick` fires: the tick plus its deterministic jitter."""
        return tick if self.jitter_s <= 0 else due_at(self.id, tick, self.jitter_s)

    def end_reason(self) -> StatusReason:
        """Why the alarm has no next tick (after a fire or a restart)."""
        if self.kind is AlarmKind.ONCE:
            return StatusReason("AUTO", MSG_FIRED_ONCE)
        if self.triggers_left() == 0:
            return StatusReason("AUTO", MSG_MAX_TRIGGERS)
        if self.kind is AlarmKind.INTERVAL:
            return StatusReason("AUTO", MSG_LAST_INTERVAL)
        return StatusReason("AUTO", MSG_LAST_CRON)

    def with_status(
        self,
        now: datetime,
        *,
        active: bool | None = None,
        paused: bool | None = None,
        reason: StatusReason | None = None,
    ) -> Alarm:
        status = AlarmStatus(
            active=self.status.active if active is None else active,
            paused=self.status.paused if paused is None else paused,
            reason=reason,
            date_changed=now,
        )
        return replace(self, status=status)

    # -- the feed's CREATE and UPDATE ----------------------------------------------------------

    @classmethod
    def from_params(
        cls,
        namespace: str,
        trigger: str,
        kind: str,
        params: Mapping[str, Any],
        *,
        now: datetime,
        max_cron_fields: int = 6,
    ) -> Alarm:
        """Validate a feed CREATE (`kind` cron for /alarm, interval, once) into a new alarm.

        `params` are the feed's parameters: cron, timezone, minutes, date, startDate, stopDate,
        maxTriggers, deleteAfterFire, strict, trigger_payload, plus Squall's misfire
        (skip|fire_once|fire_all), catchupWindowSeconds and jitterSeconds. Other keys (authKey,
        lifecycleEvent, ...) are ignored. `max_cron_fields=5` is the operator's limitCronFields.
        """
        now = ensure_utc(now, "now")
        try:
            alarm_kind = AlarmKind(kind)
        except ValueError:
            raise AlarmValidationError(
                f"unknown alarm kind '{kind}'; use cron, interval or once"
            ) from None
        values: dict[str, Any] = {
            "namespace": namespace,
            "trigger": trigger,
            "kind": alarm_kind,
            "payload": _payload(params.get("trigger_payload")),
            "status": AlarmStatus(date_changed=now),
            **_policy_params(params, {}),
        }
        if alarm_kind is AlarmKind.ONCE:
            if not _given(params, "date"):
                raise AlarmValidationError("alarms once trigger feed is missing the date parameter")
            values["date"] = _future_date(params["date"], "date", now)
            if _given(params, "deleteAfterFire"):
                values["delete_after_fire"] = _delete_after_fire(params["deleteAfterFire"])
            return cls(**values)

        if alarm_kind is AlarmKind.INTERVAL:
            values["minutes"] = parse_minutes(params.get("minutes"))
        else:
            if not _given(params, "cron"):
                raise AlarmValidationError("alarms trigger feed is missing the cron parameter")
            values["timezone"] = _timezone_param(params.get("timezone"))
            values["cron"] = _cron_param(params["cron"], values["timezone"], max_cron_fields)
            if _given(params, "strict"):
                values["strict"] = str(params["strict"]).strip().lower() != "false"

        start_raw = params.get("startDate") if _given(params, "startDate") else None
        if start_raw is not None:
            values["start_date"] = _future_date(start_raw, "startDate", now)
        elif alarm_kind is AlarmKind.INTERVAL:
            values["start_date"] = now + INTERVAL_DEFAULT_START

        if _given(params, "maxTriggers") and _given(params, "stopDate"):
            if alarm_kind is AlarmKind.INTERVAL:
                raise AlarmValidationError(
                    "maxTriggers is not supported for the interval trigger feed"
                )
            raise AlarmValidationError(
                "maxTriggers is not allowed when the stopDate parameter is specified"
            )
        if _given(params, "stopDate"):
            values["stop_date"] = _stop_date(
                params["stopDate"],
                now,
                values.get("start_date"),
                start_raw if start_raw is not None else values.get("start_date"),
            )
        if _given(params, "maxTriggers"):
            values["max_triggers"] = _max_triggers(params["maxTriggers"])

        alarm = cls(**values)
        alarm._check_fires(now)
        return alarm

    def updated(
        self, params: Mapping[str, Any], *, now: datetime, max_cron_fields: int = 6
    ) -> Alarm:
        """Apply a feed UPDATE: only the parameters given change; the alarm is re-enabled.

        Raises AlarmValidationError with OpenWhisk's messages, "no updatable parameters were
        specified" when nothing applies. The fire counter (what maxTriggers counts) restarts.
        """
        now = ensure_utc(now, "now")
        if self.status.reason is not None and self.status.reason.kind == "ADMIN":
            raise AlarmValidationError(
                f"{self.trigger} cannot be updated because it was disabled by an admin.  "
                "Please contact support for further assistance"
            )
        changes: dict[str, Any] = {}
        if _given(params, "trigger_payload"):
            changes["payload"] = _payload(params["trigger_payload"])
        if self.kind is AlarmKind.ONCE:
            if _given(params, "date"):
                changes["date"] = _future_date(params["date"], "date", now)
            if _given(params, "deleteAfterFire"):
                changes["delete_after_fire"] = _delete_after_fire(params["deleteAfterFire"])
        else:
            if self.kind is AlarmKind.INTERVAL and _given(params, "minutes"):
                changes["minutes"] = parse_minutes(params["minutes"])
            if self.kind is AlarmKind.CRON:
                if _given(params, "timezone"):
                    changes["timezone"] = _timezone_param(params["timezone"])
                if _given(params, "cron") or "timezone" in changes:
                    cron = params["cron"] if _given(params, "cron") else self.cron
                    tz = changes.get("timezone", self.timezone)
                    changes["cron"] = _cron_param(cron, tz, max_cron_fields)
            if _given(params, "startDate"):
                changes["start_date"] = _future_date(params["startDate"], "startDate", now)
            if _given(params, "stopDate"):
                start = changes.get("start_date", self.start_date)
                start_raw = params["startDate"] if "start_date" in changes else start
                changes["stop_date"] = _stop_date(params["stopDate"], now, start, start_raw)
            elif (
                "start_date" in changes
                and self.stop_date is not None
                and changes["start_date"] >= self.stop_date
            ):
                raise AlarmValidationError(
                    f"startDate parameter '{params['startDate']}' must be less than the "
                    f"stopDate parameter '{js_iso(self.stop_date)}'"
                )
        changes.update(_policy_params(params, _policy_values(self)))
        keys = _UPDATABLE_COMMON + _UPDATABLE[self.kind]
        if not any(_given(params, key) for key in keys):
            raise AlarmValidationError("no updatable parameters were specified")
        alarm = replace(
            self,
            **changes,
            status=AlarmStatus(active=True, paused=self.status.paused, date_changed=now),
            fires_count=0,
            next_tick=None,
            config_version=self.config_version + 1,
        )
        alarm._check_fires(now)
        return alarm

    def _check_fires(self, now: datetime) -> None:
        if self.next_tick_after(now) is not None:
            return
        if self.kind is AlarmKind.ONCE and self.date is not None:
            raise AlarmValidationError(
                f"date parameter '{js_iso(self.date)}' must be in the future"
            )
        raise AlarmValidationError(
            "the first scheduled trigger fire is not until after the stop date"
        )

    # -- documents -----------------------------------------------------------------------------

    def to_doc(self) -> JSONDict:
        """The stored JSON document."""
        return {
            "schema": DOC_SCHEMA,
            "kind": self.kind.value,
            "namespace": self.namespace,
            "name": self.trigger,
            "payload": self.payload,
            "cron": self.cron,
            "timezone": self.timezone,
            "strict": self.strict,
            "minutes": self.minutes,
            "date": _iso_or_none(self.date),
            "startDate": _iso_or_none(self.start_date),
            "stopDate": _iso_or_none(self.stop_date),
            "maxTriggers": -1 if self.max_triggers is None else self.max_triggers,
            "deleteAfterFire": self.delete_after_fire,
            "misfire": self.misfire,
            "catchupWindowSeconds": self.catchup_window_s,
            "jitterSeconds": self.jitter_s,
            "status": {
                "active": self.status.active,
                "paused": self.status.paused,
                "dateChanged": _ms_or_none(self.status.date_changed),
                "reason": self.status.reason.to_json() if self.status.reason else None,
            },
            "lastFire": self.last_fire.to_json() if self.last_fire else None,
            "firesCount": self.fires_count,
            "nextTick": _iso_or_none(self.next_tick),
            "configVersion": self.config_version,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Alarm:
        """An alarm from its stored document (ValueError/KeyError/TypeError when it is not one).

        A restart decodes every alarm with this, so values as `to_doc` writes them take a
        dictionary lookup (`_STORED`) and only others go through the validating parsers."""
        status = doc.get("status") or _EMPTY
        changed = status.get("dateChanged")
        max_triggers = doc.get("maxTriggers")
        delete_after_fire = doc.get("deleteAfterFire") or "false"
        misfire = doc.get("misfire") or "fire_once"
        reason = status.get("reason")
        # Strings that repeat across alarms are interned: 100,000 alarms share a handful.
        return cls(
            namespace=sys.intern(str(doc["namespace"])),
            trigger=str(doc["name"]),
            kind=_KINDS.get(doc["kind"]) or AlarmKind(doc["kind"]),
            payload=dict(doc.get("payload") or _EMPTY),
            cron=_interned(doc.get("cron")),
            timezone=_interned(doc.get("timezone")),
            strict=doc.get("strict"),
            minutes=doc.get("minutes"),
            date=_from_iso_or_none(doc.get("date")),
            start_date=_from_iso_or_none(doc.get("startDate")),
            stop_date=_from_iso_or_none(doc.get("stopDate")),
            max_triggers=None if max_triggers in (None, -1) else int(max_triggers),
            delete_after_fire=_STORED.get(delete_after_fire)
            or _delete_after_fire(delete_after_fire),
            misfire=_STORED.get(misfire) or _misfire(misfire),
            catchup_window_s=float(doc.get("catchupWindowSeconds", DEFAULT_CATCHUP_WINDOW_S)),
            jitter_s=float(doc.get("jitterSeconds", 0.0)),
            status=AlarmStatus(
                active=bool(status.get("active", True)),
                paused=bool(status.get("paused", False)),
                reason=None if reason is None else StatusReason.from_json(reason),
                date_changed=(
                    datetime.fromtimestamp(changed / 1000, UTC)
                    if isinstance(changed, int | float)
                    else None
                ),
            ),
            last_fire=LastFire.from_json(doc.get("lastFire")),
            fires_count=int(doc.get("firesCount", 0)),
            next_tick=_from_iso_or_none(doc.get("nextTick")),
            config_version=int(doc.get("configVersion", 1)),
        )


_UPDATABLE_COMMON = ("trigger_payload", "misfire", "catchupWindowSeconds", "jitterSeconds")
_UPDATABLE = {
    AlarmKind.ONCE: ("date", "deleteAfterFire"),
    AlarmKind.INTERVAL: ("minutes", "startDate", "stopDate"),
    AlarmKind.CRON: ("cron", "timezone", "startDate", "stopDate"),
}


@lru_cache(maxsize=4096)
def _schedule(
    kind: AlarmKind,
    cron: str | None,
    timezone: str | None,
    minutes: int | None,
    date: datetime | None,
    start: datetime | None,
    stop: datetime | None,
) -> Schedule:
    inner: Schedule
    if kind is AlarmKind.ONCE:
        assert date is not None, "a once alarm has a date"
        return Once(date)
    if kind is AlarmKind.INTERVAL:
        assert minutes is not None and start is not None, "an interval alarm has minutes, start"
        inner = Interval(minutes, start)
    else:
        assert cron is not None, "a cron alarm has a pattern"
        inner = Cron(cron, timezone)
    return Window(inner, start, stop)


# ---------------------------------------------------------------------------------------------
# Determinism: activation ids and jitter
# ---------------------------------------------------------------------------------------------


def activation_id_for(alarm_id: str, tick: datetime) -> str:
    """The activation id of one tick: the first 32 hex digits of sha256("{id}|{tick ISO}").

    The same tick always gets the same id, so a tick fired twice (a crash between the fire and
    persisting it) is recognised and dropped by the controller's idempotent fire.
    """
    text = f"{alarm_id}|{ensure_utc(tick, 'tick').isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def due_at(alarm_id: str, tick: datetime, jitter_s: float) -> datetime:
    """When the alarm's `tick` fires: the tick plus its deterministic jitter."""
    return tick + jitter_offset(alarm_id, tick, jitter_s) if jitter_s > 0 else tick


def jitter_offset(alarm_id: str, tick: datetime, jitter_s: float) -> timedelta:
    """A delay in [0, jitter_s) derived from (alarm id, tick): the same tick, the same delay.

    Computed for every fire of a jittered alarm, so it hashes the tick's epoch microseconds
    with an 8-byte BLAKE2b (a third of the cost of SHA-256 over the ISO text). Only the
    spread matters, not the exact values: a tick's activation id does not depend on them."""
    if jitter_s <= 0:
        return _NO_JITTER
    tick_us = (ensure_utc(tick, "tick") - _EPOCH) // ONE_MICROSECOND
    key = f"{alarm_id}|{tick_us}".encode()
    fraction = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64
    return timedelta(microseconds=math.floor(fraction * jitter_s * 1_000_000))


_NO_JITTER = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Misfires
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """The tick to fire next and what the misfire policy did to get there."""

    tick: datetime | None  # None: the alarm has no more ticks
    catchup: bool = False  # `tick` is a missed tick fired late
    # When known: `tick`'s due instant (derived, so not compared; saves computing it again).
    due: datetime | None = field(default=None, compare=False)
    dropped: int = 0  # missed ticks the policy will never fire
    capped: bool = False  # `dropped` is extrapolated from the first COUNT_CAP ticks' spacing


def plan_next(alarm: Alarm, candidate: datetime | None, now: datetime, *, grace_s: float) -> Plan:
    """Which tick to fire next, given the first tick not yet fired (`candidate`).

    A tick is missed when its due instant is more than `grace_s` before `now`. With none missed,
    the candidate stands. Otherwise, by `alarm.misfire`:
      * skip: drop every missed tick; the next is the first tick still on time;
      * fire_once: drop all missed ticks but the most recent one, which fires now;
      * fire_all: drop the ticks older than catchup_window_s; fire the rest, oldest first.
    """
    if candidate is None:
        return Plan(None)
    late_line = ensure_utc(now, "now") - timedelta(seconds=grace_s)
    due = alarm.due_at(candidate)
    if due > late_line:
        return Plan(candidate, due=due)
    schedule = alarm.schedule()
    left = alarm.triggers_left()

    def dropped_between(lo: datetime, hi: datetime | None) -> tuple[int, bool]:
        end = hi if hi is not None else late_line + ONE_MICROSECOND
        count, exact = schedule.estimate_between(lo, end, exact_up_to=COUNT_CAP)
        return count, not exact

    if alarm.misfire == "fire_all":
        window_start = ensure_utc(now) - timedelta(seconds=alarm.catchup_window_s)
        first = candidate if candidate >= window_start else schedule.first_at_or_after(window_start)
        dropped, capped = dropped_between(candidate, first)
        if first is None or left == 0:
            return Plan(None, dropped=dropped, capped=capped)
        return Plan(first, catchup=alarm.due_at(first) <= late_line, dropped=dropped, capped=capped)

    if alarm.misfire == "fire_once":
        following = schedule.next_after(candidate)
        if following is None or alarm.due_at(following) > late_line:
            return Plan(candidate, catchup=True)  # only the candidate was missed: one step
        last = schedule.last_at_or_before(late_line, not_before=candidate) or candidate
        dropped, capped = dropped_between(candidate, last)
        return Plan(last, catchup=alarm.due_at(last) <= late_line, dropped=dropped, capped=capped)

    # skip: the first tick whose due instant is still on time. Ticks before
    # late_line - jitter_s are due before late_line whatever their jitter.
    cursor = schedule.first_at_or_after(late_line - timedelta(seconds=alarm.jitter_s))
    for _ in range(SKIP_WALK_CAP):
        if cursor is None or alarm.due_at(cursor) > late_line:
            break
        cursor = schedule.next_after(cursor)
    dropped, capped = dropped_between(candidate, cursor)
    return Plan(cursor, dropped=dropped, capped=capped)


# ---------------------------------------------------------------------------------------------
# Parameter helpers
# ---------------------------------------------------------------------------------------------


def _given(params: Mapping[str, Any], key: str) -> bool:
    """OpenWhisk tests parameters for truthiness; here None, "" and False count as absent."""
    value = params.get(key)
    return value is not None and value != "" and value is not False


def _payload(value: Any) -> JSONDict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return {"payload": value}
    if isinstance(value, dict):
        return dict(value)
    raise AlarmValidationError("trigger_payload parameter must be an object or a string")


def _future_date(value: Any, param: str, now: datetime) -> datetime:
    parsed = parse_date(value, param)
    if parsed <= now:
        raise AlarmValidationError(f"{param} parameter '{value}' must be in the future")
    return parsed


def _stop_date(value: Any, now: datetime, start: datetime | None, start_raw: Any) -> datetime:
    stop = _future_date(value, "stopDate", now)
    if start is not None and stop <= start:
        shown = js_iso(start_raw) if isinstance(start_raw, datetime) else start_raw
        raise AlarmValidationError(
            f"stopDate parameter '{value}' must be greater than the startDate parameter '{shown}'"
        )
    return stop


def _timezone_param(value: Any) -> str | None:
    if value is None or value == "":
        return None
    parse_timezone(value)
    return str(value)


def _cron_param(value: Any, timezone: str | None, max_cron_fields: int) -> str:
    if not isinstance(value, str):
        raise AlarmValidationError(f"cron pattern '{value}' is not valid: it must be a string")
    Cron(value, timezone)
    if max_cron_fields <= 5 and has_seconds_granularity(value):
        raise AlarmValidationError(
            "cron pattern is limited to 5 fields with 1 minute as the finest granularity"
        )
    return value


_KINDS = {kind.value: kind for kind in AlarmKind}
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# The policy values exactly as `to_doc` stores them (hashable strings only, so a lookup of
# something else raises TypeError, which from_doc's callers treat as an unreadable document).
_STORED: dict[str, Any] = {value: value for value in (*DELETE_AFTER_FIRE, *MISFIRE_POLICIES)}


def _delete_after_fire(value: Any) -> DeleteAfterFire:
    text = str(value).strip().lower()
    if text not in DELETE_AFTER_FIRE:
        raise AlarmValidationError("deleteAfterFire parameter must be one of [false, true, rules].")
    return cast(DeleteAfterFire, sys.intern(text))  # one string for every alarm, not one each


def _misfire(value: Any) -> MisfirePolicy:
    text = str(value).strip().lower()
    if text not in MISFIRE_POLICIES:
        raise AlarmValidationError("misfire parameter must be one of [skip, fire_once, fire_all].")
    return cast(MisfirePolicy, sys.intern(text))


def _max_triggers(value: Any) -> int | None:
    number = _number(value)
    if number is None or number != int(number) or (number <= 0 and number != -1):
        raise AlarmValidationError(
            f"maxTriggers parameter '{value}' must be a positive integer, or -1 for unlimited"
        )
    return None if number == -1 else int(number)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _policy_values(alarm: Alarm) -> dict[str, Any]:
    return {
        "misfire": alarm.misfire,
        "catchup_window_s": alarm.catchup_window_s,
        "jitter_s": alarm.jitter_s,
    }


def _policy_params(params: Mapping[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Squall's misfire, catchupWindowSeconds and jitterSeconds parameters, validated."""
    out = dict(current)
    if _given(params, "misfire"):
        out["misfire"] = _misfire(params["misfire"])
    if "catchupWindowSeconds" in params and params["catchupWindowSeconds"] is not None:
        window = _number(params["catchupWindowSeconds"])
        if window is None or not 0 < window <= MAX_CATCHUP_WINDOW_S:
            raise AlarmValidationError(
                "catchupWindowSeconds parameter must be a number of seconds greater than zero "
                f"and at most {int(MAX_CATCHUP_WINDOW_S)}"
            )
        out["catchup_window_s"] = window
    if "jitterSeconds" in params and params["jitterSeconds"] is not None:
        jitter = _number(params["jitterSeconds"])
        if jitter is None or not 0 <= jitter <= MAX_JITTER_S:
            raise AlarmValidationError(
                f"jitterSeconds parameter must be a number of seconds from 0 to {int(MAX_JITTER_S)}"
            )
        out["jitter_s"] = jitter
    return out


# ---------------------------------------------------------------------------------------------
# Time rendering
# ---------------------------------------------------------------------------------------------


def _interned(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


def _iso(t: datetime) -> str:
    return ensure_utc(t).isoformat()


def _iso_or_none(t: datetime | None) -> str | None:
    return None if t is None else _iso(t)


def _from_iso(text: str) -> datetime:
    return ensure_utc(datetime.fromisoformat(text))


def _from_iso_or_none(value: Any) -> datetime | None:
    return _from_iso(value) if isinstance(value, str) and value else None


def _ms_or_none(t: datetime | None) -> int | None:
    return None if t is None else math.floor(ensure_utc(t).timestamp() * 1000)


def js_iso(t: datetime) -> str:
    """JavaScript's Date.toISOString(), as OpenWhisk renders dates: 2024-01-01T00:00:00.000Z."""
    utc = ensure_utc(t)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch."""
    return math.floor(ensure_utc(t).timestamp() * 1000)
