"""The console in a real headless browser (Debian's chromium, driven by Playwright)
against the running demo system: what a CSM clicks lands in the services' APIs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import DemoSystem, wait_for

pytestmark = [pytest.mark.xdist_group("console"), pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed: `make tools` installs Debian's chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _page(browser: Any, demo: DemoSystem, token: str) -> Any:
    """A fresh browser context signed in through the sign-in form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{demo.console}/portfolio")
    assert "/login" in page.url
    page.fill("#token", token)
    page.click("form[action='/login'] button")
    try:
        page.wait_for_url("**/portfolio", timeout=90_000)  # the whole suite loads the CPUs
    except playwright_api.TimeoutError:
        pytest.fail(f"sign-in stayed on {page.url}: {page.inner_text('body')[:600]!r}")
    return page


def _writer_with_a_manual_task(demo: DemoSystem) -> tuple[str, dict[str, Any]]:
    params = {"status": "open", "type": "task", "limit": 500}
    tasks = demo.api("playbooks", "GET", "/v1/tasks", params=params)["items"]
    task = next(t for t in tasks if t["assignee"])
    return task["assignee"], task


def test_sign_in_and_the_portfolio_lists_and_filters_by_band(
    browser: Any, demo: DemoSystem
) -> None:
    page = _page(browser, demo, demo.token("write"))
    assert page.locator("header nav a.active").inner_text() == "Portfolio"
    page.select_option("select[name=owner]", "all")
    page.click("text=Filter")
    rows = page.locator("table.grid tbody tr")
    accounts = demo.api("health", "GET", "/v1/accounts", params={"limit": 1000})
    assert rows.count() == accounts["total"]
    red = demo.api("health", "GET", "/v1/accounts", params={"band": "red", "limit": 1000})
    assert red["total"] > 0
    page.select_option("select[name=band]", "red")
    page.click("text=Filter")
    page.wait_for_url("**band=red**")
    assert rows.count() == red["total"]
    assert page.locator("table.grid tbody .pill.red").count() == red["total"]
    assert page.locator("table.grid tbody .pill.green").count() == 0
    page.context.close()


def test_an_account_page_shows_its_chart_and_components(browser: Any, demo: DemoSystem) -> None:
    scored = demo.api("health", "GET", "/v1/accounts", params={"sort": "score", "limit": 1})
    account = scored["items"][0]
    page = _page(browser, demo, demo.token("read"))
    page.goto(f"{demo.console}/accounts/{account['account_id']}")
    chart = page.locator(".score-chart svg.chart")
    assert chart.count() == 1 and chart.locator("polyline").count() == 1
    assert chart.locator(".threshold").count() == 2
    components = page.locator("table.components tbody tr")
    assert components.count() == len(account["health"]["components"])
    reasons = {c["reason"] for c in account["health"]["components"]}
    assert {
        components.nth(i).locator("td").nth(3).inner_text() for i in range(components.count())
    } == reasons
    assert page.locator("figure.metric svg").count() >= 1
    page.context.close()


def test_completing_a_task_in_the_browser_completes_it_in_playbooks(
    browser: Any, demo: DemoSystem
) -> None:
    csm, task = _writer_with_a_manual_task(demo)
    page = _page(browser, demo, demo.token("write", subject=csm))
    page.goto(f"{demo.console}/work")
    row = page.locator(f"tr[data-task='{task['id']}']")
    row.locator("button", has_text="Complete").click()
    page.wait_for_url("**/work")
    assert "Task completed." in page.locator(".flash").inner_text()
    done = demo.api("playbooks", "GET", f"/v1/tasks/{task['id']}")
    assert done["status"] == "done"
    assert page.locator(f"tr[data-task='{task['id']}']").count() == 0
    page.context.close()


def test_snoozing_an_alert_in_the_browser_snoozes_it_in_health(
    browser: Any, demo: DemoSystem
) -> None:
    alert = demo.api("health", "GET", "/v1/alerts", params={"status": "open"})["items"][0]
    page = _page(browser, demo, demo.token("write"))
    page.goto(f"{demo.console}/accounts/{alert['account_id']}")
    row = page.locator(f"tr[data-alert='{alert['id']}']")
    row.locator("select[name=days]").select_option("3")
    row.locator("button", has_text="Snooze").click()
    page.wait_for_selector(".flash")
    snoozed = wait_for(
        lambda: (
            (a := demo.api("health", "GET", f"/v1/alerts/{alert['id']}"))["status"] == "snoozed"
            and a
        ),
        what="the alert snoozed",
    )
    assert snoozed["snoozed_until"]
    page.context.close()


def test_a_read_only_token_sees_no_action_buttons(browser: Any, demo: DemoSystem) -> None:
    alert = demo.api("health", "GET", "/v1/alerts", params={"limit": 1})["items"][0]
    csm, _ = _writer_with_a_manual_task(demo)
    page = _page(browser, demo, demo.token("read", subject=csm))
    for path in (f"/accounts/{alert['account_id']}", "/work", "/rules"):
        page.goto(demo.console + path)
        buttons = {b.strip() for b in page.locator("main button").all_inner_texts()}
        assert buttons <= {"Filter", "Preview backtest"}, (path, buttons)
    assert page.locator(".scope").inner_text().lower() == "read-only"
    page.context.close()


def test_a_form_posted_without_its_csrf_token_is_refused(browser: Any, demo: DemoSystem) -> None:
    csm, task = _writer_with_a_manual_task(demo)
    page = _page(browser, demo, demo.token("write", subject=csm))
    page.goto(f"{demo.console}/work")
    form = page.locator(f"tr[data-task='{task['id']}'] form[action$='/skip']")
    form.locator("input[name=csrf]").evaluate("el => el.remove()")
    with page.expect_navigation():
        form.locator("button").click()
    assert "CSRF" in page.locator(".error").inner_text()
    assert demo.api("playbooks", "GET", f"/v1/tasks/{task['id']}")["status"] == "open"
    page.context.close()


def test_screenshots_of_the_five_pages(browser: Any, demo: DemoSystem, tmp_path: Path) -> None:
    """Written to docs/console/ when UPTAKE_SCREENSHOTS=1 (for the README), else to tmp."""
    out = SHOTS if os.environ.get("UPTAKE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    csm, _ = _writer_with_a_manual_task(demo)
    worst = demo.api("health", "GET", "/v1/accounts", params={"sort": "-alerts", "limit": 1})
    page = _page(browser, demo, demo.token("admin", subject=csm))
    for name, path in (
        ("portfolio", "/portfolio?owner=all"),
        ("account", f"/accounts/{worst['items'][0]['account_id']}"),
        ("my-work", "/work"),
        ("team", "/team"),
        ("rules", "/rules"),
    ):
        page.goto(demo.console + path)
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        assert (out / f"{name}.png").stat().st_size > 10_000
    page.context.close()
