"""Fuzzing the alarms feed's parameters against a real server (Hypothesis).

Whatever a client sends to `/whisk.system/alarms/{alarm,interval,once}` (any lifecycle event,
any JSON in any parameter), the answer is a clean success or refusal, never a 5xx from the
platform or a traceback, and the alarm service keeps running.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    FUZZ_DERANDOMIZE,
    FUZZ_EXAMPLES,
    GUEST_AUTH,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    served,
)

EXAMPLES = FUZZ_EXAMPLES * 12
FEEDS = ("alarm", "interval", "once")
EVENTS = ("CREATE", "READ", "UPDATE", "DELETE", "PAUSE", "UNPAUSE")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
crons = st.sampled_from(
    ["* * * * *", "*/5 * * * * *", "0 0 31 2 *", "61 * * * *", "* * * *", "@daily", "",
     "0 0 * * MON-FRI", "*/0 * * * *", "1-0 * * * *", "* * * * * * *", "0 0 29 2 *"]
) | st.text(max_size=30)  # fmt: skip
dates = st.sampled_from(
    ["2030-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "not a date", "", "9999-12-31T23:59:59Z",
     "2030-13-40T25:61:61Z"]
) | st.integers() | st.text(max_size=30)  # fmt: skip
parameters = st.fixed_dictionaries(
    {},
    optional={
        "cron": crons,
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "Mars/Olympus", ""]) | json_values,
        "minutes": st.integers(-5, 10**7) | json_values,
        "date": dates,
        "startDate": dates,
        "stopDate": dates,
        "deleteAfterFire": st.sampled_from(["false", "true", "rules", "maybe"]) | json_values,
        "maxTriggers": st.integers(-2, 10**9) | json_values,
        "trigger_payload": json_values,
        "misfire": st.sampled_from(["skip", "fire_once", "fire_all", "sometimes"]) | json_values,
        "catchupWindowSeconds": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "jitterSeconds": st.floats(allow_nan=False, allow_infinity=False) | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {
        "lifecycleEvent": st.sampled_from(EVENTS) | json_values,
        "triggerName": st.sampled_from(["/_/fz", "/guest/fz", "fz", "/_/missing", "/other/fz"])
        | json_values,
        "authKey": st.sampled_from([GUEST_AUTH, "nope:nope"]) | json_values,
    }
)


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with served(tmp_path_factory, "feeds") as server:
        yield server


@pytest.mark.timeout(max(120, EXAMPLES))  # about 0.15 s an example on a busy 2-core machine
@given(feed=st.sampled_from(FEEDS), envelope=envelopes, params=parameters)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=FUZZ_DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
def test_feed_parameters_never_break_the_platform(
    feed_server: ServerProcess, feed: str, envelope: dict[str, Any], params: dict[str, Any]
) -> None:
    with httpx.Client(base_url=feed_server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
        api.put("/api/v1/namespaces/_/triggers/fz?overwrite=true", json={})
        answer = api.post(
            f"/api/v1/namespaces/whisk.system/actions/alarms/{feed}?blocking=true",
            json={**params, **envelope},
        )
    assert answer.status_code in (200, 400, 401, 403, 404, 409, 413, 429, 502), answer.text
    body = answer.json()
    if answer.status_code == 502:  # the feed action failed: a record with a clean message
        error = body["response"]["result"]["error"]
        assert isinstance(error, str) and error and "Traceback" not in error, body
    elif answer.status_code != 200:
        assert set(body) == {"error", "code"}, body


def test_the_server_is_clean_after_feed_fuzzing(feed_server: ServerProcess) -> None:
    assert httpx.get(feed_server.url + "/readyz", timeout=5).json()["checks"]["alarms"]["ready"]
    log = feed_server.output()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
