"""Schedule math for alarms: cron, interval and once. Pure functions of time, no I/O, no clock.

Every schedule answers one question, `next_after(t)`: the first fire instant strictly after the
aware instant `t`, as an aware UTC datetime, or None when the schedule has no more fires.

Why the cron math is written here rather than taken from a library
-------------------------------------------------------------------
Two candidates were checked (PyPI versions and behaviour, with the same inputs):

* `croniter` (7.0.0) was declared "unmaintained and abandoned" by its author in December 2024
  (the EU Cyber Resilience Act worries) and only later taken over by pallets-eco, so its upkeep
  has a gap; it pulls in python-dateutil; and its daylight-saving behaviour is not the one an
  alarm needs: `30 2 * * *` in Europe/Berlin fires TWICE on the autumn fall-back day (00:30Z and
  01:30Z), the doubled fire this service exists to prevent.
* APScheduler 3.11's `CronTrigger.from_crontab` has the same double fire at fall-back, and reads
  day-of-week 0 as Monday (a long-known incompatibility with crontab, where 0 is Sunday).

Either would need wrapping and second-guessing on exactly the cases that matter. The cron
algorithm itself is small (the field-by-field search below), so it lives here, with stdlib
`zoneinfo` for time zones, tested case by case in tests/unit/test_alarm_schedule.py.

Semantics
---------
* Fields: `[second] minute hour day-of-month month day-of-week`. Five fields mean second 0; six
  fields put the seconds first (as the node `cron` library OpenWhisk uses). Each field is a
  comma list of `*`, `N`, `N-M`, with an optional `/STEP` (`*/15`, `5-50/5`, `7/10` = from 7 to
  the field's maximum). Month and day-of-week take three-letter names (`JAN`, `MON`), any case;
  day-of-week 0 and 7 are both Sunday; `?` means `*` in the two day fields. Macros: `@yearly`
  (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
* Day-of-month and day-of-week follow Vixie cron: when both fields are restricted (neither
  starts with `*` or `?`), a day matches if EITHER matches; otherwise both must match (so the
  unrestricted one matches every day).
* Time zone: the pattern is read in the IANA zone's local time (UTC by default).
  - A local time that does not exist (spring forward) is moved to the first valid instant after
    the gap: `30 2 * * *` in Europe/Berlin fires at 03:00 CEST on the last Sunday of March. Every
    pattern time inside the gap collapses onto that one instant, which fires once.
  - A local time that occurs twice (fall back) fires once, at its first occurrence (the summer
    time one); the repeated hour does not fire again. So a pattern firing several times an hour
    (`*/15 * * * *`) is silent for the repeated hour of real time: its local times already
    fired. (Vixie cron instead runs wildcard-hour jobs in both passes; UTC, the default zone,
    has neither gaps nor repeats.)
"""

from __future__ import annotations

import abc
import bisect
import calendar
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "AlarmValidationError",
    "Cron",
    "Interval",
    "Once",
    "Schedule",
    "Window",
    "ensure_utc",
    "has_seconds_granularity",
    "parse_date",
    "parse_minutes",
    "parse_timezone",
]

ONE_SECOND = timedelta(seconds=1)
ONE_MICROSECOND = timedelta(microseconds=1)

# The rarest day a valid pattern can ask for is February 29th: at most 8 years apart (2096 to
# 2104). A search that finds nothing in this many years has nothing to find.
SEARCH_YEARS = 10
# Candidates a single `next_after` may reject (ambiguous or skipped local times) before giving up.
MAX_REJECTED_CANDIDATES = 64


class AlarmValidationError(ValueError):
    """An alarm parameter is invalid; the message is the user-facing text (HTTP 400)."""

    status_code = 400


def ensure_utc(t: datetime, what: str = "time") -> datetime:
    """`t` as an aware UTC datetime; naive datetimes are refused (they are a bug, not input)."""
    if t.tzinfo is UTC:
        return t
    if t.tzinfo is None or t.utcoffset() is None:
        raise TypeError(f"{what} must be a timezone-aware datetime, got naive {t!r}")
    return t.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Parameter parsing shared by the feeds (OpenWhisk's messages)
# ---------------------------------------------------------------------------------------------


def parse_timezone(name: object) -> tzinfo:
    """An IANA zone by name; None or "" mean UTC. Anything unknown: "Invalid timezone."."""
    if name is None or name == "":
        return UTC
    if not isinstance(name, str):
        raise AlarmValidationError("Invalid timezone.")
    return _zone(name)


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise AlarmValidationError("Invalid timezone.") from exc


_DIGITS = re.compile(r"\A-?\d+\Z")


def parse_date(value: object, param: str) -> datetime:
    """Epoch milliseconds (number or digit string) or an ISO-8601 string, as aware UTC.

    An ISO string without an offset is read as UTC (a server has no meaningful local zone).
    """
    invalid = AlarmValidationError(f"{param} parameter '{value}' is not a valid Date")
    if isinstance(value, bool):
        raise invalid
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise invalid
            return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=value)
        if isinstance(value, str):
            text = value.strip()
            if _DIGITS.match(text):
                return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=int(text))
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid from exc
    raise invalid


def parse_minutes(value: object) -> int:
    """The interval feed's `minutes`: an integer greater than zero."""
    if value is None or value == "":
        raise AlarmValidationError("interval trigger feed is missing the minutes parameter")
    number: float
    if isinstance(value, bool):
        raise AlarmValidationError("the minutes parameter must be an integer")
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError as exc:
            raise AlarmValidationError("the minutes parameter must be an integer") from exc
    else:
        raise AlarmValidationError("the minutes parameter must be an integer")
    if not math.isfinite(number) or number != int(number):
        raise AlarmValidationError("the minutes parameter must be an integer")
    if number <= 0:
        raise AlarmValidationError("the minutes parameter must be an integer greater than zero")
    return int(number)


def has_seconds_granularity(expression: str) -> bool:
    """OpenWhisk's `limitCronFields` check: six fields whose seconds field is not just `0`."""
    fields = expression.strip().split()
    return len(fields) > 5 and fields[-6] != "0"


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


class Schedule(abc.ABC):
    """A sequence of fire instants."""

    __slots__ = ()

    @abc.abstractmethod
    def next_after(self, t: datetime) -> datetime | None:
        """The first fire strictly after `t` (aware), as aware UTC; None when there is none."""

    def next_fires(self, n: int, after: datetime) -> list[datetime]:
        """The next `n` fires strictly after `after` (fewer when the schedule ends)."""
        return list(self.iter_after(after, limit=n))

    def iter_after(self, after: datetime, *, limit: int) -> Iterator[datetime]:
        """Fires strictly after `after`, in order, at most `limit` of them."""
        t = ensure_utc(after, "after")
        for _ in range(max(limit, 0)):
            nxt = self.next_after(t)
            if nxt is None:
                return
            yield nxt
            t = nxt

    def count_between(self, lo: datetime, hi: datetime, *, cap: int) -> int:
        """How many fires fall in [`lo`, `hi`), counting at most `cap` of them."""
        count = 0
        cursor = self.first_at_or_after(lo)
        end = ensure_utc(hi)
        while cursor is not None and cursor < end and count < cap:
            count += 1
            cursor = self.next_after(cursor)
        return count

    def estimate_between(self, lo: datetime, hi: datetime, *, exact_up_to: int) -> tuple[int, bool]:
        """How many fires fall in [`lo`, `hi`): counted one by one up to `exact_up_to`, then
        extrapolated from the mean gap of those (an hour's outage of a per-second alarm must
        not cost 3,600 steps per alarm at start). Returns (count, exact)."""
        count = 0
        first = cursor = self.first_at_or_after(lo)
        last = None
        end = ensure_utc(hi)
        while cursor is not None and cursor < end:
            if count == exact_up_to and first is not None and last is not None:
                gap = (last - first) / (count - 1) if count > 1 else cursor - last
                if gap <= timedelta(0):
                    return count, False
                return count - ((cursor - end) // gap), False  # + ceil((end-cursor)/gap)
            count += 1
            last = cursor
            cursor = self.next_after(cursor)
        return count, True

    def first_at_or_after(self, t: datetime) -> datetime | None:
        """The first fire at `t` or later."""
        return self.next_after(ensure_utc(t) - ONE_MICROSECOND)

    def last_at_or_before(self, t: datetime, *, not_before: datetime) -> datetime | None:
        """The latest fire in [`not_before`, `t`], None when there is none.

        Generic: looks back in growing windows from `t`, so a dense schedule is answered from
        its last few fires and a sparse one costs a few windows, never a walk from `not_before`.
        """
        hi, lo = ensure_utc(t), ensure_utc(not_before)
        if hi < lo:
            return None
        window = timedelta(minutes=2)
        while True:
            start = lo if hi - lo <= window else hi - window
            last = None
            cursor = self.first_at_or_after(start)
            while cursor is not None and cursor <= hi:
                last = cursor
                cursor = self.next_after(cursor)
            if last is not None or start == lo:
                return last
            window *= 16


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None


_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day of week", 0, 7, _DAYS)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAYS_IN_MONTH = {m: 31 if m in (1, 3, 5, 7, 8, 10, 12) else 30 for m in range(1, 13)} | {2: 29}
_ITEM = re.compile(r"\A(?P<range>\*|\?|[^-/]+(?:-[^-/]+)?)(?:/(?P<step>[^/]*))?\Z")


class _Invalid(Exception):
    """Why a cron pattern is invalid (wrapped into AlarmValidationError with the pattern)."""


def _value(text: str, field: _Field) -> int:
    if text.isdigit():
        number = int(text)
    elif field.names is not None and text.upper() in field.names:
        number = field.names[text.upper()]
    else:
        raise _Invalid(f"'{text}' is not a valid {field.name} value")
    if not field.low <= number <= field.high:
        raise _Invalid(f"{field.name} value {number} is out of range {field.low}-{field.high}")
    return number


def _parse_field(text: str, field: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if not item or match is None:
            raise _Invalid(f"'{item}' is not a valid {field.name} item in '{text}'")
        span, step_text = match.group("range"), match.group("step")
        if span == "?" and field not in (_DOM, _DOW):
            raise _Invalid(f"'?' is only allowed in the day fields, not in {field.name}")
        if span in ("*", "?"):
            low, high = field.low, field.high
        elif "-" in span:
            first, last = span.split("-", 1)
            low, high = _value(first, field), _value(last, field)
            if low > high:
                raise _Invalid(f"{field.name} range {span} is reversed")
        else:
            low = _value(span, field)
            high = field.high if step_text is not None else low
        step = 1
        if step_text is not None:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _Invalid(f"step '{step_text}' in '{item}' must be a positive integer")
            step = int(step_text)
        values.update(range(low, high + 1, step))
    if field is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


class Cron(Schedule):
    """A cron pattern in an IANA time zone; see the module docstring for the exact semantics.

    Raises AlarmValidationError("cron pattern '...' is not valid: ...") or "Invalid timezone.".
    """

    __slots__ = (
        "_day_set",
        "_dom_or_dow",
        "_hour_set",
        "_minute_set",
        "_month_set",
        "_second_set",
        "_weekday_set",
        "days",
        "expression",
        "hours",
        "minutes",
        "months",
        "seconds",
        "timezone",
        "tz",
        "weekdays",
    )

    def __init__(self, expression: str, timezone: str | None = None) -> None:
        self.expression = expression
        self.timezone = timezone or "UTC"
        self.tz = parse_timezone(timezone)
        try:
            self._parse(expression)
        except _Invalid as exc:
            raise AlarmValidationError(f"cron pattern '{expression}' is not valid: {exc}") from None

    def _parse(self, expression: object) -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise _Invalid("the pattern is empty")
        text = expression.strip()
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                raise _Invalid(f"unknown macro '{text}' (use one of {', '.join(_MACROS)})")
            text = _MACROS[text.lower()]
        fields = text.split()
        if len(fields) not in (5, 6):
            raise _Invalid(f"expected 5 or 6 fields, got {len(fields)}")
        if len(fields) == 5:
            fields.insert(0, "0")
        specs = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
        parsed = [_parse_field(f, spec) for f, spec in zip(fields, specs, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays = parsed
        # Membership is tested on every step of a search: sets, not the sorted lists bisect uses.
        self._second_set, self._minute_set, self._hour_set = (frozenset(f) for f in parsed[:3])
        self._day_set, self._month_set, self._weekday_set = (frozenset(f) for f in parsed[3:])
        dom_star = fields[3][0] in "*?"
        dow_star = fields[5][0] in "*?"
        self._dom_or_dow = not dom_star and not dow_star
        if dow_star and not any(d <= _DAYS_IN_MONTH[m] for m in self.months for d in self.days):
            raise _Invalid("that day of month never occurs in the selected months")

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, {self.timezone!r})"

    # -- the search in local wall time --------------------------------------------------------

    def _day_matches(self, day: date) -> bool:
        dom = day.day in self._day_set
        dow = day.isoweekday() % 7 in self._weekday_set
        return (dom or dow) if self._dom_or_dow else (dom and dow)

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive local time strictly after naive `wall`."""
        t = wall.replace(microsecond=0) + ONE_SECOND
        last_year = wall.year + SEARCH_YEARS
        while t.year <= last_year:
            if t.month not in self._month_set:
                i = bisect.bisect_left(self.months, t.month)
                if i == len(self.months):
                    if t.year == 9999:
                        return None
                    t = datetime(t.year + 1, self.months[0], 1)
                else:
                    t = datetime(t.year, self.months[i], 1)
                continue
            if not self._day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self._hour_set:
                i = bisect.bisect_left(self.hours, t.hour)
                if i == len(self.hours):
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = t.replace(hour=self.hours[i], minute=0, second=0)
                continue
            if t.minute not in self._minute_set:
                i = bisect.bisect_left(self.minutes, t.minute)
                if i == len(self.minutes):
                    t = t.replace(minute=0, second=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=self.minutes[i], second=0)
                continue
            if t.second not in self._second_set:
                i = bisect.bisect_left(self.seconds, t.second)
                if i == len(self.seconds):
                    t = t.replace(second=0) + timedelta(minutes=1)
                else:
                    t = t.replace(second=self.seconds[i])
                continue
            return t
        return None

    def next_after(self, t: datetime) -> datetime | None:
        after = ensure_utc(t)
        try:
            wall = after.astimezone(self.tz).replace(tzinfo=None)
        except OverflowError:
            return None
        for _ in range(MAX_REJECTED_CANDIDATES):
            try:
                candidate = self.next_wall(wall)
            except OverflowError:
                return None
            if candidate is None:
                return None
            instant, skip_to = _resolve(candidate, self.tz)
            if instant > after:
                return instant
            # The candidate is an ambiguous time whose first occurrence is already past, or a
            # nonexistent one whose shifted instant is: everything up to `skip_to` is too.
            wall = max(skip_to - ONE_MICROSECOND, candidate)
        return None


def _offset(instant: datetime, tz: tzinfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _transition(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The first whole-second UTC instant in (before, after] whose offset differs from before's.

    tzdata transitions fall on whole seconds, so a binary search over seconds is exact.
    """
    start = _offset(before, tz)
    lo, hi = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), tz) == start:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _resolve(wall: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC instant a local wall time fires at, and the wall time a rejected search skips to.

    Normal time: itself. Ambiguous (fall back): the first occurrence; skip to the end of the
    repeated interval. Nonexistent (spring forward): the end of the gap, for both.
    """
    if tz is UTC:
        return wall.replace(tzinfo=UTC), wall
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return first, wall
    if first < second:  # ambiguous: the wall clock shows this time twice
        change = _transition(first, second, tz)
        repeat_end = (change + _offset(first, tz)).replace(tzinfo=None)
        return first, repeat_end
    # nonexistent: fold=1 reads it with the new offset (earlier instant), fold=0 with the old
    change = _transition(second, first, tz)
    gap_end = change.astimezone(tz).replace(tzinfo=None)
    return change, gap_end


class Interval(Schedule):
    """Every `minutes` minutes, aligned to `start`: start, start + N min, start + 2N min, ..."""

    __slots__ = ("minutes", "period", "start")

    def __init__(self, minutes: int, start: datetime) -> None:
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise AlarmValidationError("the minutes parameter must be an integer greater than zero")
        self.minutes = minutes
        self.period = timedelta(minutes=minutes)
        self.start = ensure_utc(start, "start")

    def __repr__(self) -> str:
        return f"Interval({self.minutes}, {self.start.isoformat()})"

    def next_after(self, t: datetime) -> datetime | None:
        after = ensure_utc(t)
        if after < self.start:
            return self.start
        k = (after - self.start) // self.period + 1
        return self.start + k * self.period

    def count_between(self, lo: datetime, hi: datetime, *, cap: int) -> int:
        first = self.first_at_or_after(lo)
        end = ensure_utc(hi)
        if first is None or first >= end:
            return 0
        return min(cap, -((first - end) // self.period))

    def last_at_or_before(self, t: datetime, *, not_before: datetime) -> datetime | None:
        hi, lo = ensure_utc(t), ensure_utc(not_before)
        if hi < self.start or hi < lo:
            return None
        last = self.start + ((hi - self.start) // self.period) * self.period
        return last if last >= lo else None


class Once(Schedule):
    """A single fire at `date`."""

    __slots__ = ("date",)

    def __init__(self, date: datetime) -> None:
        self.date = ensure_utc(date, "date")

    def __repr__(self) -> str:
        return f"Once({self.date.isoformat()})"

    def next_after(self, t: datetime) -> datetime | None:
        return self.date if self.date > ensure_utc(t) else None


class Window(Schedule):
    """Another schedule's fires at or after `start` and strictly before `stop`."""

    __slots__ = ("inner", "start", "stop")

    def __init__(
        self, inner: Schedule, start: datetime | None = None, stop: datetime | None = None
    ) -> None:
        self.inner = inner
        self.start = ensure_utc(start, "start") if start is not None else None
        self.stop = ensure_utc(stop, "stop") if stop is not None else None

    def __repr__(self) -> str:
        return f"Window({self.inner!r}, start={self.start}, stop={self.stop})"

    def next_after(self, t: datetime) -> datetime | None:
        after = ensure_utc(t)
        if self.start is not None and after < self.start:
            nxt = self.inner.first_at_or_after(self.start)
        else:
            nxt = self.inner.next_after(after)
        if nxt is None or (self.stop is not None and nxt >= self.stop):
            return None
        return nxt

    def last_at_or_before(self, t: datetime, *, not_before: datetime) -> datetime | None:
        lo = ensure_utc(not_before)
        hi = ensure_utc(t)
        if self.start is not None:
            lo = max(lo, self.start)
        if self.stop is not None:
            hi = min(hi, self.stop - ONE_MICROSECOND)
        if hi < lo:
            return None
        return self.inner.last_at_or_before(hi, not_before=lo)
