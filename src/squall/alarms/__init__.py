"""Alarms: OpenWhisk's /whisk.system/alarms feeds (cron, interval, once) as a timer service.

`schedule` is the pure time math, `model` the alarm document and its validation, `service` the
timer that fires triggers on time, once per tick, across restarts.
"""

from squall.alarms.model import (
    Alarm,
    AlarmKind,
    AlarmStatus,
    LastFire,
    StatusReason,
    activation_id_for,
    jitter_offset,
)
from squall.alarms.schedule import AlarmValidationError, Cron, Interval, Once, Schedule, Window
from squall.alarms.service import (
    ALARMS_COLLECTION,
    AlarmService,
    AlarmStats,
    DeleteAfterFireCallback,
    FireCallback,
    FireOutcome,
    FireRecord,
    FireResult,
    RetryPolicy,
)

__all__ = [
    "ALARMS_COLLECTION",
    "Alarm",
    "AlarmKind",
    "AlarmService",
    "AlarmStats",
    "AlarmStatus",
    "AlarmValidationError",
    "Cron",
    "DeleteAfterFireCallback",
    "FireCallback",
    "FireOutcome",
    "FireRecord",
    "FireResult",
    "Interval",
    "LastFire",
    "Once",
    "RetryPolicy",
    "Schedule",
    "StatusReason",
    "Window",
    "activation_id_for",
    "jitter_offset",
]
