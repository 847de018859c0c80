"""The dashboard's server side: schedules in words and the latency history it charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from squall.alarms import Alarm, FireOutcome, FireRecord
from squall.ops.counters import ActivationCounts
from squall.ui.history import History
from squall.ui.views import describe_event, is_event
from squall.ui.words import cron_in_words, schedule_in_words

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("*/5 * * * *", "Every 5 minutes"),
        ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
        ("*/2 * * * * *", "Every 2 seconds"),  # six fields: seconds first, as Squall reads them
        ("not a cron", "cron 'not a cron'"),  # never an error page for an odd expression
    ],
)
def test_cron_in_words(expression: str, words: str) -> None:
    assert cron_in_words(expression) == words


def test_each_alarm_kind_in_words() -> None:
    cron = Alarm.from_params("ns", "t", "cron", {"cron": "0 9 * * *", "timezone": "Europe/Paris"},
                             now=NOW)  # fmt: skip
    assert schedule_in_words(cron) == "At 09:00 (Europe/Paris)"
    start = NOW + timedelta(minutes=1)
    every_15 = {"minutes": 15, "startDate": start.isoformat()}
    interval = Alarm.from_params("ns", "t", "interval", every_15, now=NOW)
    assert schedule_in_words(interval) == "Every 15 minutes, from 2026-11-27 08:01:00 UTC"
    once = Alarm.from_params("ns", "t", "once", {"date": start.isoformat()}, now=NOW)
    assert schedule_in_words(once) == "Once, at 2026-11-27 08:01:00 UTC"


def observe(counts: ActivationCounts, *durations: int) -> None:
    for duration in durations:
        counts.observe({"statusCode": 0, "duration": duration})


def test_history_charts_latency_of_the_activations_between_two_samples() -> None:
    counts = ActivationCounts()
    observe(counts, 3000)  # before the first sample: not part of any point
    history = History(min_gap_s=0)
    assert history.sample(counts, None, None) == []  # the first sample is only a baseline
    observe(counts, *([4] * 19), 700)
    [point] = history.sample(counts, 1.5, 9.0)
    assert point["meanMs"] == pytest.approx((19 * 4 + 700) / 20)
    assert point["p95Ms"] == 5  # 19 of 20 (95%) fall in the bucket bounded by 5 ms
    assert (point["lagP50Ms"], point["lagP99Ms"]) == (1.5, 9.0)
    assert point["perSecond"] > 0
    [_, idle] = history.sample(counts, None, None)
    assert (idle["meanMs"], idle["p95Ms"], idle["perSecond"]) == (None, None, 0.0)


def test_history_takes_at_most_one_sample_per_gap() -> None:
    counts = ActivationCounts()
    history = History(min_gap_s=60)
    history.sample(counts, None, None)
    observe(counts, 10)
    assert history.sample(counts, None, None) == []  # asked again at once: no new point


def fire(outcome: FireOutcome, *, attempts: int = 1, catchup: bool = False) -> FireRecord:
    return FireRecord("ns/t", NOW, NOW, NOW, 1.0, "a" * 32, outcome, attempts, catchup)


@pytest.mark.parametrize(
    ("record", "event"),
    [
        (fire(FireOutcome.FIRED), None),
        (fire(FireOutcome.NO_ACTIVE_RULES), None),
        (fire(FireOutcome.FIRED, catchup=True), "misfire: a missed tick fired late"),
        (fire(FireOutcome.THROTTLED, attempts=5), "throttled: the namespace's fires-per-minute"),
        (fire(FireOutcome.FIRED, attempts=3), "delivered after 3 attempts"),
        (fire(FireOutcome.FAILED, attempts=4), "not delivered: failed"),
        (fire(FireOutcome.TRIGGER_GONE), "not delivered: trigger gone"),
    ],
)
def test_fires_worth_calling_out_become_events(record: FireRecord, event: str | None) -> None:
    if event is None:
        assert not is_event(record)
    else:
        assert is_event(record)
        assert describe_event(record)["what"].startswith(event)
