"""`/ui` and its JSON views on an in-process platform: authentication, namespace, no secrets."""

from __future__ import annotations

import httpx
import pytest

from squall.controller.auth import generate_auth, subject_record
from squall.platform import Platform
from tests.conftest import GUEST_KEY, GUEST_UUID


@pytest.fixture
async def guest(platform: Platform) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=platform.app)
    return httpx.AsyncClient(transport=transport, base_url="http://squall",
                             auth=(GUEST_UUID, GUEST_KEY))  # fmt: skip


async def test_page_and_assets_are_served_with_a_strict_policy(guest: httpx.AsyncClient) -> None:
    page = await guest.get("/ui", auth=None)
    assert page.status_code == 200 and "/ui/static/app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    script = await guest.get("/ui/static/app.js", auth=None)
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert (await guest.get("/ui/static/nothing.js", auth=None)).status_code == 404


@pytest.mark.parametrize("path", ["/ui/api/system", "/ui/api/alarms"])
async def test_views_need_a_valid_key(guest: httpx.AsyncClient, path: str) -> None:
    for auth in (None, (GUEST_UUID, "wrong")):
        refused = await guest.get(path, auth=auth)
        assert refused.status_code == 401
        assert set(refused.json()) == {"error", "code"}
        assert "www-authenticate" not in refused.headers  # no browser password dialog


async def test_alarms_view_shows_only_the_callers_namespace(
    platform: Platform, guest: httpx.AsyncClient
) -> None:
    other_auth = generate_auth()
    await platform.entities.put_subject(subject_record("other", other_auth))
    uid, _, key = other_auth.partition(":")
    for client_auth, trigger in (((GUEST_UUID, GUEST_KEY), "mine"), ((uid, key), "theirs")):
        put = await guest.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={}, auth=client_auth)
        assert put.status_code == 200, put.text
        created = await guest.post(
            "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
            json={"lifecycleEvent": "CREATE", "triggerName": f"/_/{trigger}",
                  "cron": "0 9 * * 1-5"},
            auth=client_auth,
        )  # fmt: skip
        assert created.status_code == 200, created.text
    view = (await guest.get("/ui/api/alarms")).json()
    assert view["total"] == 1
    [alarm] = view["alarms"]
    assert alarm["trigger"] == "mine"
    assert alarm["words"] == "At 09:00, Monday through Friday (UTC)"
    assert len(alarm["next"]) == 5 and alarm["fires"] == [] and alarm["events"] == []


async def test_system_view_is_the_readiness_data_without_secrets(
    platform: Platform, guest: httpx.AsyncClient
) -> None:
    view = (await guest.get("/ui/api/system")).json()
    ready, readyz = platform.readiness.report()
    assert view["ready"] is ready is True
    assert view["checks"] == readyz["checks"]
    assert {r["role"] for r in view["roles"]} == {"controller", "scheduler", "invoker"}
    assert all(r["ready"] and r["waitingFor"] == [] for r in view["roles"])
    # SQUALL_PREWARM_COUNT=1 in the tests: one stem cell for each runtime installed.
    assert view["prewarm"]["target"] == len(platform.invoker.prewarm.pools) >= 1
    assert GUEST_KEY not in (await guest.get("/ui/api/system")).text
