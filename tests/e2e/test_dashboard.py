"""The dashboard at /ui in a real browser (headless Chromium through Playwright) against a real
`squall standalone` process whose activation store is a real PostgreSQL.

The tests run in order on one signed-in page, as a user would: sign in, invoke from the form,
follow the activation to its logs, watch an alarm, disable a rule, then stop PostgreSQL and see
the System page say so (and recover). Screenshots of each page land in TEST_UI_ARTIFACTS (a
temporary directory by default, printed at the end).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from squall.testing import LocalPostgres
from tests.conftest import (
    GUEST_AUTH,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    local_postgres,
    require,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
HELLO = (
    "def main(args):\n"
    "    print('hello', args.get('name'))\n"
    "    if args.get('fail'):\n"
    "        return {'error': 'asked to fail'}\n"
    "    return {'greeting': 'hi ' + str(args.get('name'))}\n"
)
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def artifacts() -> Path:
    chosen = os.environ.get("TEST_UI_ARTIFACTS")
    path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="squall-ui-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    server = local_postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def squall(postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("ui-server")
    env = {"SQUALL_ACTIVATION_STORE": postgres.url()}
    server = start_server(base / "data", base / "server.log", env)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def api(squall: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=squall.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    require(
        importlib.util.find_spec("playwright") is not None, "playwright (pip install -e '.[dev]')"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def page(browser: Any, squall: ServerProcess, artifacts: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.base_url = squall.url  # type: ignore[attr-defined]
    try:
        yield tab
    finally:
        context.close()
        print(f"\ndashboard screenshots: {artifacts}")
    assert not errors, f"JavaScript errors in the page: {errors}"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(locator)


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def go(page: Any, fragment: str) -> None:
    page.evaluate("fragment => { location.hash = fragment; }", fragment)


def test_sign_in_with_a_key_kept_in_the_session_only(page: Any, artifacts: Path) -> None:
    page.goto(page.base_url + "/ui")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, artifacts, "sign-in")
    page.keyboard.type(f"{GUEST_UUID}:wrong")  # the key field has the focus: keyboard only
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert").filter(has_text="refused")).to_be_visible()
    page.locator("#key").fill(GUEST_AUTH)
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_have_text("namespace guest")
    assert GUEST_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('squall.auth')") == GUEST_AUTH
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []


def test_invoke_from_the_form_then_see_it_in_the_list_and_timeline(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    put = api.put(
        "/api/v1/namespaces/_/actions/hello", json={"exec": {"kind": "python:3", "code": HELLO}}
    )
    assert put.status_code == 200, put.text
    go(page, "#/actions")
    page.get_by_role("link", name="hello").click()
    expect(page.locator("#code")).to_contain_text("def main(args)")
    page.locator("#params").fill('{"name": "Squall"}')
    page.get_by_role("button", name="Invoke").click()
    outcome = page.locator("#invoke-outcome")
    expect(outcome).to_contain_text('"greeting": "hi Squall"')
    activation_id = outcome.locator("a").first.inner_text()
    shot(page, artifacts, "action")

    go(page, "#/activations")
    row = page.locator(f'tr[data-id="{activation_id}"]')
    expect(row).to_contain_text("hello")
    expect(row).to_contain_text("cold")  # the first run of an action starts its container
    expect(page.locator(f'#timeline a[data-id="{activation_id}"] rect.bar-cold')).to_have_count(1)

    # Live: a run started elsewhere shows up without a reload, an error in red on the timeline.
    page.evaluate("window.__sameDocument = true")
    failed = api.post("/api/v1/namespaces/_/actions/hello?blocking=true", json={"fail": True})
    assert failed.status_code == 502, failed.text
    failed_id = failed.json()["activationId"]
    expect(page.locator(f'tr[data-id="{failed_id}"]')).to_contain_text("application error")
    expect(page.locator(f'#timeline a[data-id="{failed_id}"] rect.bar-bad')).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True

    page.locator("#filter-status").select_option("1")  # application errors only
    expect(page.locator(f'tr[data-id="{activation_id}"]')).to_have_count(0)
    expect(page.locator(f'tr[data-id="{failed_id}"]')).to_have_count(1)
    page.locator("#filter-status").select_option("")
    shot(page, artifacts, "activations")

    phone = page.context.browser.new_context(viewport={"width": 375, "height": 740})
    try:
        small = phone.new_page()
        small.goto(page.base_url + "/ui")
        small.locator("#key").fill(GUEST_AUTH)
        small.keyboard.press("Enter")
        expect(small.locator(f'tr[data-id="{activation_id}"]')).to_be_visible()
        wide = small.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        assert not wide, "the activations page scrolls sideways on a phone"
        small.screenshot(path=str(artifacts / "activations-phone.png"), full_page=True)
    finally:
        phone.close()


def test_open_an_activation_and_its_logs(page: Any, artifacts: Path) -> None:
    go(page, "#/activations")
    page.locator("#filter-name").fill("hello")
    first = page.locator("#activation-list tbody tr").last  # the oldest: the form's invoke
    expect(first).to_contain_text("hello")
    first.get_by_role("link").click()
    expect(page.locator("#logs")).to_contain_text("hello Squall")
    expect(page.locator("#result")).to_contain_text("hi Squall")
    expect(page.get_by_role("list", name="Chain of causes")).to_contain_text("invoked directly")
    shot(page, artifacts, "activation")
    go(page, "#/activations")  # the filter is remembered across pages; clear it
    expect(page.locator("#filter-name")).to_have_value("hello")
    page.locator("#filter-name").fill("")


def test_alarm_shows_next_fires_then_a_fire_and_its_chain(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    assert api.put("/api/v1/namespaces/_/triggers/tick", json={}).status_code == 200
    rule = api.put(
        "/api/v1/namespaces/_/rules/tick-hello", json={"trigger": "/_/tick", "action": "/_/hello"}
    )
    assert rule.status_code == 200, rule.text
    created = api.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
        json={"lifecycleEvent": "CREATE", "triggerName": "/_/tick", "cron": "*/2 * * * * *",
              "trigger_payload": {"name": "alarm"}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    go(page, "#/triggers")
    card = page.locator('article.alarm[data-trigger="tick"]')
    expect(card.locator(".words")).to_contain_text("Every 2 seconds")
    expect(card.locator("ol.next-fires li")).to_have_count(5)
    expect(card.locator("table.last-fires tbody tr").first).to_contain_text("ms")
    shot(page, artifacts, "triggers")

    fire = card.locator("table.last-fires tbody tr a").first
    fire.click()
    chain = page.get_by_role("list", name="Chain of causes")
    expect(chain).to_contain_text("tick-hello")  # the trigger activation lists its rule
    action_link = chain.locator("a").first
    action_link.click()
    expect(page.get_by_role("list", name="Chain of causes")).to_contain_text("trigger tick")
    expect(page.locator("#logs")).to_contain_text("hello alarm")

    go(page, "#/activations")  # the alarm's trigger activations and their actions, live
    expect(page.locator("#activation-list tbody tr").filter(has_text="tick").first).to_be_visible()
    shot(page, artifacts, "activations-alarm")

    go(page, "#/triggers")
    pause = page.get_by_role("button", name="Pause alarm tick")
    pause.click()
    expect(card.locator(".badge").first).to_have_text("paused")
    expect(card.locator("ol.next-fires li")).to_have_count(0)
    page.get_by_role("button", name="Resume alarm tick").click()
    expect(card.locator("ol.next-fires li")).to_have_count(5)


def test_disable_a_rule_with_the_keyboard(page: Any, api: httpx.Client) -> None:
    go(page, "#/triggers")
    button = page.get_by_role("button", name="Disable rule tick-hello")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Enable rule tick-hello")).to_be_visible()
    assert api.get("/api/v1/namespaces/_/rules/tick-hello").json()["status"] == "inactive"
    # The next refresh re-reads the rule from the API and keeps the keyboard focus on it.
    page.wait_for_timeout(2500)
    expect(page.get_by_role("button", name="Enable rule tick-hello")).to_be_focused()


def test_a_stopped_activation_store_turns_not_ready_and_back(
    page: Any, api: httpx.Client, postgres: LocalPostgres, artifacts: Path
) -> None:
    go(page, "#/system")
    check = page.locator('#checks tr[data-check="activation_store"]')
    expect(check).to_contain_text("ok")
    expect(page.locator("#overall")).to_contain_text("Ready")
    latency = page.get_by_role("img", name="Activation latency (ms)")
    expect(latency).to_have_count(1)
    for _ in range(3):  # runs while the page watches become a point on the latency chart
        assert api.post("/api/v1/namespaces/_/actions/hello?blocking=true", json={}).is_success
    expect(latency).to_have_attribute("aria-label", re.compile(r"latest mean \d"))
    shot(page, artifacts, "system")
    postgres.stop()
    try:
        expect(check).to_contain_text("unavailable", timeout=20_000)
        expect(page.locator("#overall")).to_contain_text("Not ready")
        expect(check).to_contain_text("SQUALL_ACTIVATION_STORE")  # the fix names the setting
        shot(page, artifacts, "system-not-ready")
        go(page, "#/activations")  # the list cannot be read meanwhile, and says so
        expect(page.locator("#problem")).to_contain_text("temporarily unavailable")
        go(page, "#/system")
    finally:
        postgres.start()
    expect(check).to_contain_text("ok", timeout=30_000)
    expect(page.locator("#overall")).to_contain_text("Ready")
    go(page, "#/activations")
    expect(page.locator("#activation-list tbody tr").first).to_be_visible()
    expect(page.locator("#problem")).to_have_text("")


def test_the_dashboard_api_needs_the_key(squall: ServerProcess) -> None:
    for path in ("/ui/api/system", "/ui/api/alarms"):
        refused = httpx.get(squall.url + path)
        assert refused.status_code == 401
        assert set(refused.json()) == {"error", "code"}
    page_response = httpx.get(squall.url + "/ui")
    # The page itself is public (it holds no data until a key is given) and runs no inline code.
    assert page_response.status_code == 200
    assert "script-src 'self'" in page_response.headers["content-security-policy"]
