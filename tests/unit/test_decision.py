"""The scheduling decision maker, case by case against OpenWhisk's rules."""

from squall.scheduler.decision import QueueSnapshot, decide


def snapshot(**overrides: object) -> QueueSnapshot:
    values: dict[str, object] = dict(
        existing=0,
        in_progress=0,
        queued=0,
        stale=0,
        namespace_existing=0,
        namespace_in_progress=0,
        namespace_limit=30,
        action_limit=30,
        concurrency=1,
        average_duration_ms=None,
        stale_threshold_ms=100,
    )
    values.update(overrides)
    return QueueSnapshot(**values)  # type: ignore[arg-type]


def test_empty_queue_needs_nothing() -> None:
    assert decide(snapshot()).add == 0


def test_first_activation_gets_one_container() -> None:
    assert decide(snapshot(queued=1)).add == 1


def test_unknown_duration_adds_one_per_stale_activation() -> None:
    assert decide(snapshot(existing=1, queued=5, stale=3)).add == 3
    assert decide(snapshot(existing=1, queued=5, stale=3, in_progress=2)).add == 1


def test_fresh_backlog_with_unknown_duration_waits() -> None:
    assert decide(snapshot(existing=1, queued=5, stale=0)).add == 0


def test_fast_action_keeps_one_container_for_a_small_backlog() -> None:
    # 1 ms per activation: one container clears 100 per stale threshold.
    assert decide(snapshot(existing=1, queued=50, average_duration_ms=1.0)).add == 0


def test_slow_action_scales_with_backlog() -> None:
    # 100 ms per activation: one container clears one per threshold; 10 waiting -> 9 more.
    decision = decide(snapshot(existing=1, queued=10, average_duration_ms=100.0))
    assert decision.add == 9


def test_namespace_limit_caps_and_throttles() -> None:
    decision = decide(
        snapshot(
            existing=1,
            queued=50,
            average_duration_ms=100.0,
            namespace_existing=28,
            namespace_limit=30,
        )
    )
    assert decision.add == 2
    assert decision.namespace_throttled


def test_action_instances_limit() -> None:
    decision = decide(
        snapshot(
            existing=2, queued=50, average_duration_ms=100.0, action_limit=2, namespace_existing=2
        )
    )
    assert decision.add == 0
    assert decision.namespace_throttled


def test_zero_limit_never_creates() -> None:
    decision = decide(snapshot(queued=3, namespace_limit=0))
    assert decision.add == 0
    assert decision.namespace_throttled
