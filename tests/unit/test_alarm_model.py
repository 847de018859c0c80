"""The alarm document: feed validation with OpenWhisk's messages, JSON round trip, the
deterministic activation id and jitter, and the misfire planner."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from squall.alarms.model import (
    COUNT_CAP,
    MSG_FIRED_ONCE,
    Alarm,
    AlarmKind,
    AlarmStatus,
    LastFire,
    Plan,
    StatusReason,
    activation_id_for,
    jitter_offset,
    plan_next,
)
from squall.alarms.schedule import AlarmValidationError

NOW = datetime(2030, 1, 7, 12, 0, 30, tzinfo=UTC)
LATER = "2030-01-08T00:00:00Z"
PAST = "2029-12-31T00:00:00Z"


def at(minute: int, second: int = 0) -> datetime:
    return NOW.replace(minute=minute, second=second)


def build(kind: str, **params: Any) -> Alarm:
    return Alarm.from_params("guest", "t", kind, params, now=NOW)


# ---------------------------------------------------------------------------------------------
# CREATE
# ---------------------------------------------------------------------------------------------


def test_cron_alarm() -> None:
    alarm = build(
        "cron",
        cron="*/5 * * * *",
        timezone="Europe/Berlin",
        trigger_payload={"k": "v"},
        maxTriggers=3,
    )
    assert (alarm.id, alarm.kind, alarm.cron, alarm.timezone) == (
        "guest/t",
        AlarmKind.CRON,
        "*/5 * * * *",
        "Europe/Berlin",
    )
    assert alarm.payload == {"k": "v"} and alarm.max_triggers == 3
    assert alarm.misfire == "fire_once" and alarm.catchup_window_s == 3600 and alarm.jitter_s == 0
    assert alarm.status == AlarmStatus(active=True, paused=False, date_changed=NOW)
    assert alarm.next_tick_after(NOW) == at(5)


def test_a_string_payload_is_wrapped() -> None:
    assert build("cron", cron="* * * * *", trigger_payload="hello").payload == {"payload": "hello"}
    assert build("cron", cron="* * * * *").payload == {}


def test_interval_starts_thirty_seconds_from_now_by_default() -> None:
    alarm = build("interval", minutes="10")
    assert alarm.minutes == 10 and alarm.start_date == NOW + timedelta(seconds=30)
    assert alarm.next_tick_after(NOW) == NOW + timedelta(seconds=30)


def test_once_alarm_with_epoch_ms() -> None:
    when = NOW + timedelta(hours=1)
    alarm = build("once", date=int(when.timestamp() * 1000), deleteAfterFire=" Rules ")
    assert alarm.date == when and alarm.delete_after_fire == "rules"


def test_squall_policy_parameters() -> None:
    alarm = build(
        "cron", cron="* * * * *", misfire="fire_all", catchupWindowSeconds="600", jitterSeconds=2.5
    )
    assert (alarm.misfire, alarm.catchup_window_s, alarm.jitter_s) == ("fire_all", 600, 2.5)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("cron", {}, "alarms trigger feed is missing the cron parameter"),
        (
            "cron",
            {"cron": "61 * * * *"},
            "cron pattern '61 * * * *' is not valid: minute value 61 is out of range 0-59",
        ),
        ("cron", {"cron": 5}, "cron pattern '5' is not valid: it must be a string"),
        ("cron", {"cron": "* * * * *", "timezone": "Nowhere/Land"}, "Invalid timezone."),
        ("interval", {}, "interval trigger feed is missing the minutes parameter"),
        ("interval", {"minutes": "five"}, "the minutes parameter must be an integer"),
        ("interval", {"minutes": -1}, "the minutes parameter must be an integer greater than zero"),
        ("once", {}, "alarms once trigger feed is missing the date parameter"),
        ("once", {"date": "soon"}, "date parameter 'soon' is not a valid Date"),
        ("once", {"date": PAST}, f"date parameter '{PAST}' must be in the future"),
        (
            "once",
            {"date": LATER, "deleteAfterFire": "maybe"},
            "deleteAfterFire parameter must be one of [false, true, rules].",
        ),
        (
            "cron",
            {"cron": "* * * * *", "startDate": PAST},
            f"startDate parameter '{PAST}' must be in the future",
        ),
        (
            "cron",
            {"cron": "* * * * *", "startDate": LATER, "stopDate": "2030-01-07T18:00:00Z"},
            "stopDate parameter '2030-01-07T18:00:00Z' must be greater than the startDate "
            f"parameter '{LATER}'",
        ),
        (
            "cron",
            {"cron": "* * * * *", "stopDate": LATER, "maxTriggers": 3},
            "maxTriggers is not allowed when the stopDate parameter is specified",
        ),
        (
            "interval",
            {"minutes": 1, "stopDate": LATER, "maxTriggers": 3},
            "maxTriggers is not supported for the interval trigger feed",
        ),
        (
            "cron",
            {"cron": "0 0 1 1 *", "stopDate": LATER},
            "the first scheduled trigger fire is not until after the stop date",
        ),
        (
            "cron",
            {"cron": "* * * * *", "maxTriggers": "lots"},
            "maxTriggers parameter 'lots' must be a positive integer, or -1 for unlimited",
        ),
        (
            "cron",
            {"cron": "* * * * *", "misfire": "sometimes"},
            "misfire parameter must be one of [skip, fire_once, fire_all].",
        ),
        (
            "cron",
            {"cron": "* * * * *", "jitterSeconds": -1},
            "jitterSeconds parameter must be a number of seconds from 0 to 3600",
        ),
        (
            "cron",
            {"cron": "* * * * *", "catchupWindowSeconds": 0},
            "catchupWindowSeconds parameter must be a number of seconds greater than zero and at "
            "most 604800",
        ),
        (
            "cron",
            {"cron": "* * * * *", "trigger_payload": 42},
            "trigger_payload parameter must be an object or a string",
        ),
        ("weekly", {}, "unknown alarm kind 'weekly'; use cron, interval or once"),
    ],
)
def test_invalid_create_parameters(kind: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(AlarmValidationError) as caught:
        build(kind, **params)
    assert str(caught.value) == message


def test_operator_can_limit_cron_to_five_fields() -> None:
    with pytest.raises(
        AlarmValidationError,
        match=r"^cron pattern is limited to 5 fields with 1 "
        r"minute as the finest granularity$",
    ):
        Alarm.from_params(
            "guest", "t", "cron", {"cron": "*/5 * * * * *"}, now=NOW, max_cron_fields=5
        )
    ok = Alarm.from_params(
        "guest", "t", "cron", {"cron": "0 * * * * *"}, now=NOW, max_cron_fields=5
    )
    assert ok.cron == "0 * * * * *"


def test_unknown_parameters_are_ignored() -> None:
    alarm = build("cron", cron="* * * * *", authKey="u:k", lifecycleEvent="CREATE")
    assert alarm.cron == "* * * * *"


# ---------------------------------------------------------------------------------------------
# UPDATE
# ---------------------------------------------------------------------------------------------


def test_update_changes_only_what_is_given_and_re_enables() -> None:
    alarm = build("cron", cron="* * * * *", trigger_payload={"a": 1}, maxTriggers=5)
    ended = replace(
        alarm.with_status(NOW, active=False, reason=StatusReason("AUTO", "Automatically disabled")),
        fires_count=5,
    )
    later = NOW + timedelta(minutes=1)
    updated = ended.updated({"cron": "*/2 * * * *"}, now=later)
    assert updated.cron == "*/2 * * * *" and updated.payload == {"a": 1}
    assert updated.status == AlarmStatus(active=True, date_changed=later)
    assert updated.fires_count == 0 and updated.config_version == 2 and updated.max_triggers == 5


def test_update_messages() -> None:
    alarm = build("cron", cron="* * * * *", stopDate=LATER)
    with pytest.raises(AlarmValidationError, match=r"^no updatable parameters were specified$"):
        alarm.updated({"minutes": 5, "authKey": "x"}, now=NOW)
    with pytest.raises(AlarmValidationError) as caught:
        alarm.updated({"startDate": "2030-01-09T00:00:00Z"}, now=NOW)
    assert str(caught.value) == (
        "startDate parameter '2030-01-09T00:00:00Z' must be less than the stopDate parameter "
        "'2030-01-08T00:00:00.000Z'"
    )
    admin = alarm.with_status(NOW, active=False, reason=StatusReason("ADMIN", "abuse"))
    with pytest.raises(AlarmValidationError, match="disabled by an admin"):
        admin.updated({"cron": "*/5 * * * *"}, now=NOW)
    with pytest.raises(AlarmValidationError, match="Invalid timezone"):
        alarm.updated({"timezone": "Atlantis/Capital"}, now=NOW)


def test_update_of_a_once_alarm() -> None:
    alarm = build("once", date=LATER)
    updated = alarm.updated({"deleteAfterFire": "true", "trigger_payload": "x"}, now=NOW)
    assert updated.delete_after_fire == "true" and updated.payload == {"payload": "x"}
    fired = alarm.with_status(NOW, active=False, reason=StatusReason("AUTO", MSG_FIRED_ONCE))
    with pytest.raises(AlarmValidationError, match="must be in the future"):
        fired.updated({"trigger_payload": "x"}, now=datetime(2030, 2, 1, tzinfo=UTC))


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def test_document_round_trip() -> None:
    alarm = replace(
        build(
            "cron",
            cron="0 9 * * MON-FRI",
            timezone="America/New_York",
            trigger_payload={"x": [1, 2]},
            startDate="2030-01-07T13:00:00.250Z",
            stopDate="2030-06-01T00:00:00Z",
            misfire="fire_all",
            jitterSeconds=3,
            strict="false",
        ),
        last_fire=LastFire(
            at(1), at(1) + timedelta(milliseconds=2), 2.0, "a" * 32, "fired", 2, True
        ),
        fires_count=7,
        next_tick=datetime(2030, 1, 8, 14, tzinfo=UTC) + timedelta(microseconds=1),
        status=AlarmStatus(
            active=False, paused=True, reason=StatusReason("AUTO", "gone", 404), date_changed=at(2)
        ),
        config_version=4,
    )
    doc = orjson.loads(orjson.dumps(alarm.to_doc()))
    assert doc["maxTriggers"] == -1 and doc["nextTick"] == "2030-01-08T14:00:00.000001+00:00"
    assert doc["status"]["reason"] == {"kind": "AUTO", "message": "gone", "statusCode": 404}
    assert Alarm.from_doc(doc) == alarm


def test_document_of_a_once_alarm() -> None:
    alarm = build("once", date=LATER, deleteAfterFire="true")
    assert Alarm.from_doc(orjson.loads(orjson.dumps(alarm.to_doc()))) == alarm


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def test_activation_id_is_a_hash_of_alarm_and_tick() -> None:
    tick = at(5)
    expected = hashlib.sha256(b"guest/t|2030-01-07T12:05:00+00:00").hexdigest()[:32]
    assert activation_id_for("guest/t", tick) == expected
    assert len(expected) == 32 and int(expected, 16) >= 0
    # the same instant in another zone is the same tick
    assert activation_id_for("guest/t", tick.astimezone(timedelta_zone(2))) == expected
    assert activation_id_for("guest/t", at(6)) != expected
    assert activation_id_for("guest/u", tick) != expected


def timedelta_zone(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_jitter_is_deterministic_and_bounded() -> None:
    ticks = [NOW + timedelta(minutes=m) for m in range(1000)]
    offsets = [jitter_offset("guest/t", t, 30) for t in ticks]
    assert offsets == [jitter_offset("guest/t", t, 30) for t in ticks]
    assert all(timedelta(0) <= o < timedelta(seconds=30) for o in offsets)
    assert len(set(offsets)) > 900  # spread, not one constant delay
    assert max(offsets) > timedelta(seconds=25) and min(offsets) < timedelta(seconds=5)
    assert jitter_offset("guest/t", NOW, 0) == timedelta(0)
    alarm = build("cron", cron="* * * * *", jitterSeconds=30)
    assert alarm.due_at(at(1)) == at(1) + jitter_offset("guest/t", at(1), 30)
    # Alarms differ too, and a timezone-aware tick in another zone is the same tick.
    assert jitter_offset("guest/u", at(1), 30) != jitter_offset("guest/t", at(1), 30)
    assert jitter_offset("guest/t", at(1).astimezone(timedelta_zone(2)), 30) == jitter_offset(
        "guest/t", at(1), 30
    )


def test_an_on_time_plan_carries_its_due_instant() -> None:
    alarm = build("cron", cron="* * * * *", jitterSeconds=30)
    plan = plan_next(alarm, at(2), at(1), grace_s=1)
    assert plan.tick == at(2) and plan.due == alarm.due_at(at(2)) and plan.due > at(2)


# ---------------------------------------------------------------------------------------------
# Misfire planning
# ---------------------------------------------------------------------------------------------


def every_minute(**params: Any) -> Alarm:
    return build("cron", cron="* * * * *", **params)


def test_a_tick_within_the_grace_is_on_time() -> None:
    alarm = every_minute(misfire="skip")
    assert plan_next(alarm, at(1), at(0, 59), grace_s=1) == Plan(at(1))
    assert plan_next(alarm, at(1), at(1, 0) + timedelta(milliseconds=900), grace_s=1) == Plan(at(1))
    assert plan_next(alarm, None, at(5), grace_s=1) == Plan(None)


def test_skip_drops_every_missed_tick() -> None:
    assert plan_next(every_minute(misfire="skip"), at(1), at(10, 30), grace_s=1) == Plan(
        at(11), dropped=10, capped=True  # more than COUNT_CAP: extrapolated, exactly here
    )


def test_fire_once_fires_the_latest_missed_tick() -> None:
    assert plan_next(every_minute(), at(1), at(10, 30), grace_s=1) == Plan(
        at(10), catchup=True, dropped=9, capped=True
    )


def test_fire_all_fires_missed_ticks_within_the_window() -> None:
    assert plan_next(every_minute(misfire="fire_all"), at(1), at(10, 30), grace_s=1) == Plan(
        at(1), catchup=True
    )
    windowed = every_minute(misfire="fire_all", catchupWindowSeconds=300)
    assert plan_next(windowed, at(1), at(10, 30), grace_s=1) == Plan(at(6), catchup=True, dropped=5)


def test_misfires_respect_stop_date_and_max_triggers() -> None:
    stopped = every_minute(stopDate=at(4, 30).isoformat())
    assert plan_next(stopped, at(1), at(10, 30), grace_s=1) == Plan(at(4), catchup=True, dropped=3)
    spent = replace(every_minute(misfire="fire_all", maxTriggers=3), fires_count=3)
    assert plan_next(spent, at(1), at(10, 30), grace_s=1).tick is None


def test_a_missed_once_alarm() -> None:
    once = build("once", date=at(5).isoformat())
    assert plan_next(once, at(5), at(9), grace_s=1) == Plan(at(5), catchup=True)
    skipped = replace(once, misfire="skip")
    assert plan_next(skipped, at(5), at(9), grace_s=1) == Plan(None, dropped=1)


def test_huge_backlogs_are_extrapolated_not_walked() -> None:
    every_second = build("cron", cron="* * * * * *", misfire="skip")
    plan = plan_next(every_second, at(1), at(1) + timedelta(days=3), grace_s=1)
    assert plan.tick == at(1) + timedelta(days=3)  # due at `now`: within the 1 s grace
    # Counted one by one up to COUNT_CAP, then from their spacing: exact for a regular schedule.
    assert (plan.dropped, plan.capped) == (3 * 86_400, True)
    few = plan_next(every_second, at(1), at(1) + timedelta(seconds=COUNT_CAP - 1), grace_s=0.5)
    assert (few.dropped, few.capped) == (COUNT_CAP - 1, False)


def test_an_irregular_backlog_is_estimated_closely() -> None:
    weekdays = build("cron", cron="0 9,17 * * 1-5", misfire="skip").schedule()
    lo, hi = at(0), at(0) + timedelta(days=120)
    exact = weekdays.count_between(lo, hi, cap=10_000)
    estimate, is_exact = weekdays.estimate_between(lo, hi, exact_up_to=COUNT_CAP)
    assert not is_exact and abs(estimate - exact) <= 0.4 * exact


def test_interval_misfires() -> None:
    alarm = build("interval", minutes=5, startDate=at(1).isoformat(), misfire="fire_once")
    assert plan_next(alarm, at(1), at(23), grace_s=1) == Plan(at(21), catchup=True, dropped=4)
