"""An alarm's schedule in words: what the dashboard shows next to the raw cron expression."""

from __future__ import annotations

from datetime import datetime

from cron_descriptor import (  # type: ignore[import-untyped]
    CasingTypeEnum,
    ExpressionDescriptor,
    FormatException,
    Options,
)

from squall.alarms import Alarm, AlarmKind


def schedule_in_words(alarm: Alarm) -> str:
    """`Every 5 minutes, from 2026-01-01 10:00 UTC`, `At 09:00 AM, Monday through Friday (Europe/
    Paris)`, `Once, at ...`."""
    if alarm.kind is AlarmKind.ONCE:
        return f"Once, at {_when(alarm.date)}"
    if alarm.kind is AlarmKind.INTERVAL:
        minutes = alarm.minutes or 0
        unit = "minute" if minutes == 1 else f"{minutes} minutes"
        return f"Every {unit}, from {_when(alarm.start_date)}" + _until(alarm.stop_date)
    return f"{cron_in_words(alarm.cron or '')} ({alarm.timezone or 'UTC'})" + _until(
        alarm.stop_date
    )


def cron_in_words(expression: str) -> str:
    """cron-descriptor reads 6 fields as seconds first, which is how Squall's alarms read them."""
    options = Options()
    options.casing_type = CasingTypeEnum.Sentence
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(expression, options).get_description())
    except (FormatException, ValueError, IndexError, KeyError):
        return f"cron '{expression}'"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if moment else "now"


def _until(moment: datetime | None) -> str:
    return f", until {_when(moment)}" if moment else ""
