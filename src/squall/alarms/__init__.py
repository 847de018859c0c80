"""Alarms: OpenWhisk's /whisk.system/alarms feeds (cron, interval, once) as a timer service.

`schedule` is the pure time math, `model` the alarm document and its validation, `service` the
timer that fires triggers on time, once per tick, across restarts. Cluster mode: `shards` (which
scheduler holds an alarm), `admin` (the feed lifecycle seam on a local service), `routes` (a
scheduler's internal endpoint for it) and `remote` (a controller's client of that endpoint).
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
    NotOwner,
    RetryPolicy,
)
from squall.alarms.shards import ShardOwnership, alarm_shard

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
    "NotOwner",
    "Once",
    "RetryPolicy",
    "Schedule",
    "ShardOwnership",
    "StatusReason",
    "Window",
    "activation_id_for",
    "alarm_shard",
    "jitter_offset",
]
