"""Schedule math: cron patterns, time zones and daylight saving, interval, once, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from squall.alarms.schedule import (
    AlarmValidationError,
    Cron,
    Interval,
    Once,
    Window,
    has_seconds_granularity,
    parse_date,
    parse_minutes,
    parse_timezone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def fires(expr: str, after: datetime, n: int = 4, tz: str | None = None) -> list[datetime]:
    return Cron(expr, tz).next_fires(n, after)


JAN1 = utc(2024, 1, 1)  # a Monday, in a leap year


# ---------------------------------------------------------------------------------------------
# Cron fields
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "*/15 * * * *",
            [
                utc(2024, 1, 1, 0, 15),
                utc(2024, 1, 1, 0, 30),
                utc(2024, 1, 1, 0, 45),
                utc(2024, 1, 1, 1, 0),
            ],
        ),
        (
            "0 9-17/4 * * *",
            [utc(2024, 1, 1, 9), utc(2024, 1, 1, 13), utc(2024, 1, 1, 17), utc(2024, 1, 2, 9)],
        ),
        (
            "5,10,55 * * * *",
            [
                utc(2024, 1, 1, 0, 5),
                utc(2024, 1, 1, 0, 10),
                utc(2024, 1, 1, 0, 55),
                utc(2024, 1, 1, 1, 5),
            ],
        ),
        (
            "7/20 * * * *",
            [
                utc(2024, 1, 1, 0, 7),
                utc(2024, 1, 1, 0, 27),
                utc(2024, 1, 1, 0, 47),
                utc(2024, 1, 1, 1, 7),
            ],
        ),
        ("0 0 * * MON,wed", [utc(2024, 1, 3), utc(2024, 1, 8), utc(2024, 1, 10), utc(2024, 1, 15)]),
        (
            "0 12 1 JAN,jul *",
            [utc(2024, 1, 1, 12), utc(2024, 7, 1, 12), utc(2025, 1, 1, 12), utc(2025, 7, 1, 12)],
        ),
        ("0 0 * * MON-FRI", [utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 4), utc(2024, 1, 5)]),
        ("0 0 * * 7", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21), utc(2024, 1, 28)]),
        ("0 0 * * 0", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21), utc(2024, 1, 28)]),
        ("0 0 * * 5-7", [utc(2024, 1, 5), utc(2024, 1, 6), utc(2024, 1, 7), utc(2024, 1, 12)]),
        ("0 0 ? * SUN", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21), utc(2024, 1, 28)]),
        ("0 0 1 */3 *", [utc(2024, 4, 1), utc(2024, 7, 1), utc(2024, 10, 1), utc(2025, 1, 1)]),
        (
            "59 23 31 12 *",
            [
                utc(2024, 12, 31, 23, 59),
                utc(2025, 12, 31, 23, 59),
                utc(2026, 12, 31, 23, 59),
                utc(2027, 12, 31, 23, 59),
            ],
        ),
    ],
)
def test_five_field_patterns(expr: str, expected: list[datetime]) -> None:
    assert fires(expr, JAN1) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "*/20 * * * * *",
            [
                utc(2024, 1, 1, 0, 0, 20),
                utc(2024, 1, 1, 0, 0, 40),
                utc(2024, 1, 1, 0, 1),
                utc(2024, 1, 1, 0, 1, 20),
            ],
        ),
        (
            "30 15 10 * * *",
            [
                utc(2024, 1, 1, 10, 15, 30),
                utc(2024, 1, 2, 10, 15, 30),
                utc(2024, 1, 3, 10, 15, 30),
                utc(2024, 1, 4, 10, 15, 30),
            ],
        ),
        (
            "0,30 * * * * *",
            [
                utc(2024, 1, 1, 0, 0, 30),
                utc(2024, 1, 1, 0, 1),
                utc(2024, 1, 1, 0, 1, 30),
                utc(2024, 1, 1, 0, 2),
            ],
        ),
        ("* * * * * *", [utc(2024, 1, 1, 0, 0, s) for s in range(1, 5)]),
    ],
)
def test_six_field_patterns_lead_with_seconds(expr: str, expected: list[datetime]) -> None:
    assert fires(expr, JAN1) == expected


def test_next_after_is_strict_and_ignores_microseconds() -> None:
    cron = Cron("* * * * * *")
    assert cron.next_after(utc(2024, 1, 1, 0, 0, 0)) == utc(2024, 1, 1, 0, 0, 1)
    assert cron.next_after(JAN1 + timedelta(microseconds=500_000)) == utc(2024, 1, 1, 0, 0, 1)
    assert Cron("0 * * * *").next_after(utc(2024, 1, 1, 0, 59, 59, 999999)) == utc(2024, 1, 1, 1)


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 13th OR any Friday
    assert fires("0 0 13 * FRI", JAN1) == [
        utc(2024, 1, 5),
        utc(2024, 1, 12),
        utc(2024, 1, 13),
        utc(2024, 1, 19),
    ]


def test_a_star_day_field_means_the_other_one_decides() -> None:
    assert fires("0 0 13 * *", JAN1, 2) == [utc(2024, 1, 13), utc(2024, 2, 13)]
    assert fires("0 0 * * FRI", JAN1, 2) == [utc(2024, 1, 5), utc(2024, 1, 12)]
    # a field starting with '*' counts as unrestricted: days 1,11,21,31 AND Sunday
    assert fires("0 0 */10 * SUN", JAN1, 3) == [
        utc(2024, 1, 21),
        utc(2024, 2, 11),
        utc(2024, 3, 31),
    ]


def test_month_ends_skip_short_months() -> None:
    assert fires("0 0 31 * *", utc(2024, 1, 31)) == [
        utc(2024, 3, 31),
        utc(2024, 5, 31),
        utc(2024, 7, 31),
        utc(2024, 8, 31),
    ]
    assert fires("0 0 30 2,4 *", JAN1, 2) == [utc(2024, 4, 30), utc(2025, 4, 30)]


def test_leap_days() -> None:
    assert fires("0 0 29 2 *", utc(2024, 3, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    # 2100 is not a leap year: eight years between February 29ths
    assert fires("0 0 29 2 *", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]
    assert fires("0 0 28-29 2 *", utc(2023, 1, 1), 3) == [
        utc(2023, 2, 28),
        utc(2024, 2, 28),
        utc(2024, 2, 29),
    ]


def test_year_rollover() -> None:
    assert fires("0 0 1 1 *", utc(2024, 12, 31, 23, 59), 1) == [utc(2025, 1, 1)]


@pytest.mark.parametrize(
    ("macro", "first"),
    [
        ("@hourly", utc(2024, 1, 1, 1)),
        ("@daily", utc(2024, 1, 2)),
        ("@midnight", utc(2024, 1, 2)),
        ("@weekly", utc(2024, 1, 7)),
        ("@monthly", utc(2024, 2, 1)),
        ("@yearly", utc(2025, 1, 1)),
        ("@ANNUALLY", utc(2025, 1, 1)),
    ],
)
def test_macros(macro: str, first: datetime) -> None:
    assert Cron(macro).next_after(JAN1) == first


def test_search_matches_a_minute_by_minute_scan() -> None:
    """The field-by-field search agrees with brute force over ten days of minutes."""
    patterns = [
        "*/7 3-5 * * *",
        "0 */5 1,15 * MON",
        "15 10 * * 1-5",
        "0 0 31 * *",
        "*/13 * 2-3 * *",
        "0 12 * JAN,MAR SAT",
        "45 23 * * *",
    ]
    start = utc(2024, 1, 27, 0, 0)
    for expr in patterns:
        cron = Cron(expr)
        dom_or_dow = not expr.split()[2].startswith(("*", "?")) and not expr.split()[4].startswith(
            ("*", "?")
        )

        def matches(t: datetime, cron: Cron = cron, dom_or_dow: bool = dom_or_dow) -> bool:
            dom, dow = t.day in cron.days, t.isoweekday() % 7 in cron.weekdays
            day = (dom or dow) if dom_or_dow else (dom and dow)
            return (
                t.minute in cron.minutes and t.hour in cron.hours and day and t.month in cron.months
            )

        expected = [
            start + timedelta(minutes=m)
            for m in range(1, 10 * 24 * 60)
            if matches(start + timedelta(minutes=m))
        ]
        got = (
            [t for t in cron.iter_after(start, limit=len(expected) + 1) if t <= expected[-1]]
            if expected
            else []
        )
        assert got == expected, expr


# ---------------------------------------------------------------------------------------------
# Time zones and daylight saving
# ---------------------------------------------------------------------------------------------


def test_timezone_shifts_the_pattern() -> None:
    # 09:00 in New York: 14:00Z in winter, 13:00Z in summer
    assert fires("0 9 * * *", JAN1, 1, "America/New_York") == [utc(2024, 1, 1, 14)]
    assert fires("0 9 * * *", utc(2024, 7, 1), 1, "America/New_York") == [utc(2024, 7, 1, 13)]


def test_berlin_spring_forward_moves_a_skipped_time_to_the_end_of_the_gap() -> None:
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST (01:00Z); 02:30 never happens that day
    after = datetime(2024, 3, 30, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", after, 3, "Europe/Berlin") == [
        utc(2024, 3, 31, 1, 0),
        utc(2024, 4, 1, 0, 30),
        utc(2024, 4, 2, 0, 30),
    ]


def test_berlin_spring_forward_collapses_the_gap_onto_one_fire() -> None:
    after = datetime(2024, 3, 31, 1, 10, tzinfo=BERLIN)  # 00:10Z
    assert fires("*/30 * * * *", after, 4, "Europe/Berlin") == [
        utc(2024, 3, 31, 0, 30),  # 01:30 CET
        utc(2024, 3, 31, 1, 0),  # 02:00 and 02:30 do not exist: once, at 03:00 CEST
        utc(2024, 3, 31, 1, 30),  # 03:30 CEST
        utc(2024, 3, 31, 2, 0),
    ]
    assert fires("0 * * * *", utc(2024, 3, 31, 0, 30), 3, "Europe/Berlin") == [
        utc(2024, 3, 31, 1),
        utc(2024, 3, 31, 2),
        utc(2024, 3, 31, 3),
    ]


def test_berlin_fall_back_fires_an_ambiguous_time_once() -> None:
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:30 happens twice
    after = datetime(2024, 10, 26, 12, tzinfo=BERLIN)
    assert fires("30 2 * * *", after, 2, "Europe/Berlin") == [
        utc(2024, 10, 27, 0, 30),  # the first 02:30 (CEST) only
        utc(2024, 10, 28, 1, 30),
    ]
    assert fires("*/30 * * * *", utc(2024, 10, 26, 23, 10), 6, "Europe/Berlin") == [
        utc(2024, 10, 26, 23, 30),  # 01:30 CEST
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST; the repeated 02:00 and 02:30 CET do not fire
        utc(2024, 10, 27, 2, 0),  # 03:00 CET
        utc(2024, 10, 27, 2, 30),
        utc(2024, 10, 27, 3, 0),
    ]
    assert fires("0 3 * * *", after, 1, "Europe/Berlin") == [utc(2024, 10, 27, 2)]


def test_search_from_inside_the_repeated_hour() -> None:
    cron = Cron("* * * * * *", "Europe/Berlin")
    # the first 02:59:59 CEST fires; the whole repeated hour is skipped; then 03:00 CET
    assert cron.next_fires(3, utc(2024, 10, 27, 0, 59, 58)) == [
        utc(2024, 10, 27, 0, 59, 59),
        utc(2024, 10, 27, 2, 0, 0),
        utc(2024, 10, 27, 2, 0, 1),
    ]
    # starting in the second pass of 02:xx (CET) nothing fires before 03:00 CET
    assert cron.next_after(utc(2024, 10, 27, 1, 30)) == utc(2024, 10, 27, 2, 0, 0)


def test_new_york_spring_forward_and_fall_back() -> None:
    # 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00Z)
    assert fires("30 2 * * *", utc(2024, 3, 9, 12), 2, "America/New_York") == [
        utc(2024, 3, 10, 7, 0),
        utc(2024, 3, 11, 6, 30),
    ]
    # 2024-11-03: 02:00 EDT falls back to 01:00 EST (06:00Z); 01:30 happens twice
    assert fires("30 1 * * *", utc(2024, 11, 2, 12), 2, "America/New_York") == [
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 4, 6, 30),
    ]
    assert fires("0 9 * * MON-FRI", utc(2024, 3, 8), 2, "America/New_York") == [
        utc(2024, 3, 8, 14),
        utc(2024, 3, 11, 13),
    ]


def test_a_midnight_that_does_not_exist() -> None:
    # Sao Paulo 2018-11-04: 00:00 -03 jumped to 01:00 -02 (03:00Z)
    assert fires("0 0 * * *", utc(2018, 11, 3, 12), 2, "America/Sao_Paulo") == [
        utc(2018, 11, 4, 3),
        utc(2018, 11, 5, 2),
    ]


def test_invalid_timezone() -> None:
    for bad in ("Mars/Olympus", "../etc/passwd", 42):
        with pytest.raises(AlarmValidationError, match=r"^Invalid timezone\.$"):
            parse_timezone(bad)
    with pytest.raises(ValueError, match=r"^Invalid timezone\.$"):
        Cron("* * * * *", "Europe/Nowhere")
    assert parse_timezone(None) is UTC and parse_timezone("UTC") is UTC


# ---------------------------------------------------------------------------------------------
# Invalid patterns
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("", "the pattern is empty"),
        ("* * * *", "expected 5 or 6 fields, got 4"),
        ("* * * * * * *", "expected 5 or 6 fields, got 7"),
        ("60 * * * *", "minute value 60 is out of range 0-59"),
        ("* 24 * * *", "hour value 24 is out of range 0-23"),
        ("* * 0 * *", "day of month value 0 is out of range 1-31"),
        ("* * * 13 *", "month value 13 is out of range 1-12"),
        ("* * * * 8", "day of week value 8 is out of range 0-7"),
        ("60 * * * * *", "second value 60 is out of range 0-59"),
        ("*/0 * * * *", "step '0' in '*/0' must be a positive integer"),
        ("*/x * * * *", "step 'x' in '*/x' must be a positive integer"),
        ("5-2 * * * *", "minute range 5-2 is reversed"),
        ("* * * FOO *", "'FOO' is not a valid month value"),
        ("* * * JAN-MON *", "'MON' is not a valid month value"),
        ("* * * * MON-", "'MON-' is not a valid day of week item in 'MON-'"),
        ("1,,2 * * * *", "'' is not a valid minute item in '1,,2'"),
        ("? * * * *", "'?' is only allowed in the day fields, not in minute"),
        ("0 0 30 2 *", "that day of month never occurs in the selected months"),
        ("0 0 31 4,6,9,11 *", "that day of month never occurs in the selected months"),
        ("@reboot", "unknown macro '@reboot'"),
        ("-1 * * * *", "'-1' is not a valid minute item in '-1'"),
    ],
)
def test_invalid_patterns_say_why(expr: str, why: str) -> None:
    with pytest.raises(AlarmValidationError) as caught:
        Cron(expr)
    message = str(caught.value)
    assert message.startswith(f"cron pattern '{expr}' is not valid: "), message
    assert why in message, message
    assert caught.value.status_code == 400


def test_seconds_granularity_check() -> None:
    assert has_seconds_granularity("*/10 * * * * *")
    assert not has_seconds_granularity("0 * * * * *")
    assert not has_seconds_granularity("* * * * *")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(TypeError, match="timezone-aware"):
        Cron("* * * * *").next_after(datetime(2024, 1, 1))


def test_last_at_or_before() -> None:
    yearly = Cron("0 0 1 1 *")
    assert yearly.last_at_or_before(utc(2024, 5, 1), not_before=utc(2020, 1, 1)) == JAN1
    assert yearly.last_at_or_before(utc(2024, 5, 1), not_before=utc(2024, 2, 1)) is None
    every = Cron("*/5 * * * * *")
    assert every.last_at_or_before(utc(2024, 1, 1, 0, 0, 7), not_before=JAN1) == utc(
        2024, 1, 1, 0, 0, 5
    )
    assert every.last_at_or_before(JAN1, not_before=JAN1) == JAN1


def test_count_between() -> None:
    assert Cron("*/5 * * * *").count_between(JAN1, utc(2024, 1, 1, 1), cap=100) == 12
    assert Cron("* * * * * *").count_between(JAN1, utc(2024, 1, 2), cap=100) == 100


# ---------------------------------------------------------------------------------------------
# Interval, once, window
# ---------------------------------------------------------------------------------------------


def test_interval_is_aligned_to_its_start() -> None:
    start = utc(2024, 1, 1, 12, 0, 0) + timedelta(microseconds=123_000)
    every5 = Interval(5, start)
    assert every5.next_after(start - timedelta(hours=1)) == start
    assert every5.next_after(start) == start + timedelta(minutes=5)
    assert every5.next_after(start + timedelta(seconds=1)) == start + timedelta(minutes=5)
    assert every5.next_after(start + timedelta(minutes=5)) == start + timedelta(minutes=10)
    assert every5.next_fires(3, start + timedelta(hours=10, seconds=1)) == [
        start + timedelta(hours=10, minutes=m) for m in (5, 10, 15)
    ]
    assert every5.first_at_or_after(start) == start


def test_interval_helpers_are_arithmetic() -> None:
    start = utc(2024, 1, 1, 12)
    every5 = Interval(5, start)
    assert every5.last_at_or_before(start + timedelta(minutes=12), not_before=start) == (
        start + timedelta(minutes=10)
    )
    assert every5.last_at_or_before(start - timedelta(seconds=1), not_before=JAN1) is None
    assert every5.count_between(start, start + timedelta(minutes=10), cap=100) == 2
    assert every5.count_between(start, start + timedelta(days=365), cap=100) == 100


@pytest.mark.parametrize("minutes", [0, -5])
def test_interval_needs_positive_minutes(minutes: int) -> None:
    with pytest.raises(AlarmValidationError, match="greater than zero"):
        Interval(minutes, JAN1)


def test_once() -> None:
    once = Once(utc(2024, 6, 1, 8))
    assert once.next_after(JAN1) == utc(2024, 6, 1, 8)
    assert once.next_after(utc(2024, 6, 1, 8)) is None
    assert once.next_fires(5, JAN1) == [utc(2024, 6, 1, 8)]


def test_window_bounds_a_schedule() -> None:
    window = Window(Cron("0 * * * *"), start=utc(2024, 1, 1, 3), stop=utc(2024, 1, 1, 6))
    assert window.next_fires(10, JAN1) == [
        utc(2024, 1, 1, 3),
        utc(2024, 1, 1, 4),
        utc(2024, 1, 1, 5),
    ]  # stop itself is excluded
    assert window.next_after(utc(2024, 1, 1, 5)) is None
    assert window.last_at_or_before(utc(2024, 1, 2), not_before=JAN1) == utc(2024, 1, 1, 5)


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1893456000000,
        "1893456000000",
        "2030-01-01T00:00:00Z",
        "2030-01-01T01:00:00+01:00",
        "2030-01-01",
        "2030-01-01T00:00:00",
        "2030-01-01T00:00:00.000Z",
    ],
)
def test_dates_are_epoch_ms_or_iso(value: object) -> None:
    assert parse_date(value, "startDate") == utc(2030, 1, 1)


@pytest.mark.parametrize("value", ["tomorrow", "", True, float("nan"), [], "2030-13-01"])
def test_invalid_dates(value: object) -> None:
    with pytest.raises(AlarmValidationError) as caught:
        parse_date(value, "stopDate")
    assert str(caught.value) == f"stopDate parameter '{value}' is not a valid Date"


@pytest.mark.parametrize(("value", "expected"), [(5, 5), ("5", 5), (5.0, 5), ("7.0", 7)])
def test_minutes(value: object, expected: int) -> None:
    assert parse_minutes(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "interval trigger feed is missing the minutes parameter"),
        ("", "interval trigger feed is missing the minutes parameter"),
        ("five", "the minutes parameter must be an integer"),
        (1.5, "the minutes parameter must be an integer"),
        (True, "the minutes parameter must be an integer"),
        (0, "the minutes parameter must be an integer greater than zero"),
        ("-3", "the minutes parameter must be an integer greater than zero"),
    ],
)
def test_invalid_minutes(value: object, message: str) -> None:
    with pytest.raises(AlarmValidationError) as caught:
        parse_minutes(value)
    assert str(caught.value) == message
