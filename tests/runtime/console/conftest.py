"""A real `flowctl up` (plane + local node) and Debian's headless Chromium driven by Selenium.

The browser is the system's (/usr/bin/chromium with /usr/bin/chromedriver, `apt-get install
chromium chromium-driver`); nothing is downloaded at run time: the driver's path is given, so
selenium-manager never runs. Without them the browser tests skip, saying what is missing.
Screenshots land in docs/console/ (docs/console.md shows them) when a page has none yet or
FLOWCTL_UPDATE_SCREENSHOTS=1; otherwise they go to a temporary directory, so a test run leaves
the tracked pictures (whose heartbeat ages and times differ every run) untouched.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ADMIN = "console-admin-key"
PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[3]
SHOTS = ROOT / "docs" / "console"
CHROMIUM = Path(os.environ.get("FLOWCTL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FLOWCTL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 60.0
_SCRATCH = Path(os.environ.get("TMPDIR", "/tmp"))  # replaced by a per-session directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate, *, timeout=WAIT_S, interval=0.1, what="the condition"):
    """Call `predicate` until it returns something true (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # a page mid-reload, a plane still starting
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Plane:
    """A `flowctl up` child process with its URL, CLI and admin HTTP client."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FLOWCTL_ADMIN_KEY": ADMIN, "FLOWCTL_TOKEN": ADMIN, "FLOWCTL_SERVER": self.url,
                    "FLOWCTL_CONFIG": "/nonexistent/flowctl.toml"}
        self.log = open(tmp / "up.log", "w+b")  # closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "flowctl", "up", "--port", str(self.port),
                                      "--data-dir", str(tmp / "data"), "--name", "desk"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        self.admin = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=20)
        poll(lambda: self.proc.poll() is None and [n["state"] for n in self.status()["nodes"]] == ["ready"],
             what="flowctl up's local node to be ready")

    def status(self) -> dict:
        return self.admin.get("/api/cluster/status").json()

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "flowctl", *args], capture_output=True, text=True,
                              env=self.env, stdin=subprocess.DEVNULL, timeout=WAIT_S, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def user(self, name: str, role: str, tenant: str | None = None) -> None:
        r = self.admin.post("/api/v1/users", json={"name": name, "role": role, "password": PASSWORD,
                                                   **({"tenant": tenant} if tenant else {})})
        assert r.status_code in (200, 201), r.text

    def signed_in(self, name: str) -> httpx.Client:
        """An HTTP client holding `name`'s session cookie."""
        client = httpx.Client(base_url=self.url, timeout=20)
        r = client.post("/api/v1/auth/signin", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return client

    def stop(self) -> None:
        self.admin.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """One `flowctl up` for the module's tests (each uses its own users, tenants and services)."""
    up = Plane(tmp_path_factory.mktemp("console"))
    try:
        yield up
    finally:
        up.stop()


def browser_missing() -> str | None:
    """Why no browser test can run here, else None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists() and shutil.which(path.name) is None:
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's), quit after the module."""
    missing = browser_missing()
    if missing is not None:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which(CHROMIUM.name))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver_path = str(CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which(CHROMEDRIVER.name))
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    """Take a screenshot of the whole page: docs/console/NAME.png when new or asked for."""
    target = SHOTS / f"{name}.png"
    if target.exists() and os.environ.get("FLOWCTL_UPDATE_SCREENSHOTS") != "1":
        target = _SCRATCH / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    image = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1280, "height": max(400, min(height, 2400)), "scale": 1}})
    data = base64.b64decode(image["data"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"screenshot {name} is not a PNG"
    target.write_bytes(data)


@pytest.fixture(scope="session", autouse=True)
def _scratch_shots(tmp_path_factory):
    """Where screenshots go when the tracked ones are kept."""
    global _SCRATCH
    _SCRATCH = tmp_path_factory.mktemp("screenshots")
