"""The console in a real browser (Debian's headless Chromium) against a real `flowctl up`.

One plane and one browser serve the module; each test signs in as its own user and works on
its own objects. Screenshots of every page land in docs/console/.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from packer import pack_dir
from tests.runtime.console.conftest import PASSWORD, poll, shot

pytestmark = pytest.mark.browser
ECHO_DIR = __import__("pathlib").Path(__file__).resolve().parents[3] / "examples" / "echo"
TICKER = {"name": "ticker", "description": "prints a line every half second", "trigger": {"type": "manual"},
          "parameters": {"lines": {"type": "int", "default": 3}},
          "steps": [{"name": "tick", "service": "echo@1.0.0",
                     "command": ["sh", "-c", 'for i in $(seq "$FLOWCTL_PARAM_LINES"); do echo "tick $i"; sleep 0.5; done']}]}


def sign_in(driver, plane, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{plane.url}/ui")
    poll(lambda: "/ui/signin" in driver.current_url, what="the sign-in page")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signin").click()
    poll(lambda: "/ui/signin" not in driver.current_url and driver.find_elements(By.ID, "whoami"),
         what=f"{name} signed in")


def text(driver, css: str) -> str:
    """The text of every element matching `css`, read in one step (a live update may swap them)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join(' ')", css)


def mark(driver) -> None:
    """Tag this page load: a reload would lose the tag (so a change seen with it came live)."""
    driver.execute_script("window.__sameLoad = true")


def same_load(driver) -> bool:
    return bool(driver.execute_script("return window.__sameLoad === true"))


def ready(driver, service: str) -> tuple[int, int] | None:
    """(ready, desired) as the page shows them now."""
    found = driver.execute_script(
        "const e = document.querySelector(`tr[data-service=\"${arguments[0]}\"] .ready`);"
        "return e ? [e.dataset.ready, e.dataset.desired] : null", service)
    return (int(found[0]), int(found[1])) if found else None


def scale(driver, service: str, replicas: int) -> bool:
    """Fill and send a row's scale form (a live update may replace the row first: then poll again)."""
    field = driver.find_element(By.CSS_SELECTOR, f'tr[data-service="{service}"] input[name="replicas"]')
    field.click()  # focused, the row is not swapped under the typing (static/console.js)
    field.clear()
    field.send_keys(str(replicas))
    field.submit()
    return True


@pytest.fixture(scope="module")
def echo(plane, tmp_path_factory):
    """The echo bundle published on the module's plane."""
    bundle = pack_dir(ECHO_DIR, tmp_path_factory.mktemp("echo-dist"))
    plane.cli("publish", str(bundle.path), "--hub", plane.url)
    return "echo"


def test_sign_in_and_sign_out(plane, browser):
    plane.user("sam", "admin")
    browser.delete_all_cookies()
    browser.get(f"{plane.url}/ui/signin")
    browser.find_element(By.ID, "name").send_keys("sam")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "signin").click()
    poll(lambda: "wrong user name or password" in browser.find_element(By.ID, "signin-error").text,
         what="the sign-in error on the page")
    shot(browser, "signin")
    sign_in(browser, plane, "sam")
    assert browser.current_url.endswith("/ui") and "sam (admin)" in browser.find_element(By.ID, "whoami").text
    browser.find_element(By.ID, "signout").click()
    poll(lambda: browser.current_url.endswith("/ui/signin"), what="the sign-in page after sign-out")
    browser.get(f"{plane.url}/ui/tenants")
    poll(lambda: "/ui/signin?next=/ui/tenants" in browser.current_url, what="sign-in asked again")


def test_an_admin_deploys_echo_and_scales_it_seeing_replicas_ready_live(plane, browser, echo):
    plane.user("ada", "admin")
    sign_in(browser, plane, "ada")
    browser.get(f"{plane.url}/ui/deployments")
    browser.find_element(By.ID, "deploy-service").send_keys(echo)
    replicas = browser.find_element(By.ID, "deploy-replicas")
    replicas.clear()
    replicas.send_keys("1")
    browser.find_element(By.ID, "deploy").click()
    poll(lambda: "deployed%20echo" in browser.current_url or "deployed echo" in text(browser, "#notice"),
         what="the deploy notice")
    mark(browser)
    poll(lambda: ready(browser, echo) == (1, 1), what="echo 1/1 ready on the page")
    assert same_load(browser), "the page was reloaded: readiness did not arrive live"
    shot(browser, "deployments")

    poll(lambda: scale(browser, echo, 2), what="the scale form sent")
    poll(lambda: "scaled%20echo" in browser.current_url, what="the scale notice")
    mark(browser)
    poll(lambda: ready(browser, echo) == (2, 2), what="echo 2/2 ready on the page")
    assert same_load(browser)
    assert [d["ready"] for d in plane.status()["deployments"]] == [2]

    browser.get(f"{plane.url}/ui")
    poll(lambda: "echo" in text(browser, "#deployments"), what="the overview")
    shot(browser, "overview")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "dark"}]})
    try:
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)", background  # the dark theme follows the system setting
        shot(browser, "overview-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)  # the keyboard's first stop: skip to content
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    browser.get(browser.execute_script("return document.querySelector('#nodes a').href"))  # live-swapped row
    poll(lambda: "Node desk" in browser.find_element(By.TAG_NAME, "h1").text, what="the node page")
    assert "echo" in text(browser, "table")
    poll(lambda: "echo worker listening on" in text(browser, "#replicas"),
         what="the echo worker's log lines on the node page")  # sent with the node's heartbeats
    shot(browser, "node")
    browser.get(f"{plane.url}/ui/hub")
    shot(browser, "hub")


def test_a_key_is_shown_once_and_revoked(plane, browser, echo):
    plane.user("kim", "admin")
    sign_in(browser, plane, "kim")
    browser.get(f"{plane.url}/ui/tenants")
    browser.find_element(By.ID, "tenant-name").send_keys("shop")
    browser.find_element(By.ID, "create-tenant").click()
    poll(lambda: "tenant shop created" in text(browser, "#notice"), what="the tenant notice")
    Select(browser.find_element(By.ID, "key-tenant")).select_by_visible_text("shop")
    browser.find_element(By.ID, "key-name").send_keys("till")
    browser.find_element(By.ID, "create-key").click()
    key = poll(lambda: browser.find_element(By.ID, "new-key-value").text, what="the new key").strip()
    assert key.startswith("fgk_")
    shot(browser, "tenants-new-key")
    key_id = key.split("_")[1]
    if not any(d["service"] == echo for d in plane.status()["deployments"]):
        plane.cli("deploy", echo)  # waits until ready
    for word in ("hello", "console"):  # some usage to chart
        r = plane.admin.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": echo, "messages": [{"role": "user", "content": word}]})
        assert r.status_code == 200, r.text
    browser.get(f"{plane.url}/ui/tenants")
    assert key not in browser.page_source and not browser.find_elements(By.ID, "new-key")  # shown once
    browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{key_id}"] button').click()
    poll(lambda: "revoked" in text(browser, f'tr[data-key="{key_id}"]'), what="the key revoked")
    keys = {k["key_id"]: k for k in plane.admin.get("/api/gateway/keys").json()}
    assert keys[key_id]["revoked"] is True
    shot(browser, "tenants")
    browser.get(f"{plane.url}/ui/usage?tenant=shop")
    assert "shop / echo (2)" in text(browser, "figure")
    shot(browser, "usage")
    browser.get(f"{plane.url}/ui/sessions")
    shot(browser, "sessions")


def test_a_job_is_triggered_and_its_log_followed_live(plane, browser, echo):
    plane.admin.post("/api/gateway/tenants", json={"name": "ops"})
    r = plane.admin.post("/api/v1/jobs", json=TICKER, params={"tenant": "ops"})
    assert r.status_code in (200, 201), r.text
    plane.user("jo", "operator")
    sign_in(browser, plane, "jo")
    browser.get(f"{plane.url}/ui/jobs")
    browser.find_element(By.LINK_TEXT, "ticker").click()
    browser.find_element(By.ID, "param-lines").send_keys("6")
    shot(browser, "job")
    browser.find_element(By.ID, "trigger").click()
    poll(lambda: "/ui/runs/" in browser.current_url, what="the run page")
    mark(browser)
    poll(lambda: "tick 2" in browser.find_element(By.ID, "run-log").text, what="the first lines, live")
    poll(lambda: browser.find_element(By.ID, "run-log").get_attribute("data-ended") == "succeeded",
         what="the run's end in the log")
    log = browser.find_element(By.ID, "run-log").text
    assert [f"tick {i}" in log for i in range(1, 7)] == [True] * 6 and same_load(browser)
    assert browser.find_element(By.ID, "run-state").text == "succeeded"
    poll(lambda: "succeeded" in text(browser, "#run-attempts")
         and browser.find_elements(By.CSS_SELECTOR, "#run-graph .state-succeeded"),
         what="the attempts table and step graph showing the end, live")
    assert same_load(browser), "the page was reloaded: the attempts and graph did not arrive live"
    shot(browser, "run")
    browser.get(f"{plane.url}/ui/jobs")
    shot(browser, "jobs")


def test_a_viewer_sees_everything_and_can_change_nothing(plane, browser):
    plane.user("val", "viewer")
    sign_in(browser, plane, "val")
    for path in ("/ui", "/ui/deployments", "/ui/hub", "/ui/tenants", "/ui/usage", "/ui/sessions", "/ui/jobs",
                 "/ui/audit"):
        browser.get(f"{plane.url}{path}")
        assert browser.find_elements(By.TAG_NAME, "h1"), path
        changing = [f.get_attribute("action") for f in browser.find_elements(By.CSS_SELECTOR, "main form")
                    if f.get_attribute("method") == "post"]
        assert changing == [], (path, changing)
    assert "Users" not in text(browser, "header nav")
    browser.get(f"{plane.url}/ui/audit")
    shot(browser, "audit")


def test_a_tenant_admin_sees_only_its_tenant(plane, browser):
    for tenant in ("north", "south"):
        plane.admin.post("/api/gateway/tenants", json={"name": tenant})
        plane.admin.post("/api/gateway/keys", json={"tenant": tenant, "name": f"{tenant}-key"})
    plane.user("nia", "tenant-admin", "north")
    sign_in(browser, plane, "nia")
    assert browser.current_url.endswith("/ui/tenants")
    nav = text(browser, "header nav")
    assert "Overview" not in nav and "Users" not in nav and "Tenants" in nav
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "north-key" in page and "south" not in page
    browser.get(f"{plane.url}/ui/users")
    assert "403" in browser.find_element(By.TAG_NAME, "h1").text
    plane.user("root", "admin")
    sign_in(browser, plane, "root")
    browser.get(f"{plane.url}/ui/users")
    shot(browser, "users")
