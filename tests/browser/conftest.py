"""Browser fixtures: the e2e ``comfy_server`` (one real ComfyUI server per test module), headless Chromium, and
``editor``: that browser on the server's editor with quiet settings (``open_editor`` reloads it for a clean state).

Chromium and chromedriver come from Debian (``apt-get install -y chromium chromium-driver``; scripts/setup_env.sh
installs them when run as root). Without them the browser tests FAIL with that command: they are never skipped.
"""

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.conftest import comfy_server, pack_log_problems  # noqa: F401  (fixtures shared with the e2e tests)


INSTALL_COMMAND = "apt-get update && apt-get install -y chromium chromium-driver"
BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
WINDOW_SIZE = (2400, 1350)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_chromium() -> tuple[str, str]:
    """(browser, chromedriver) paths: $CHROMIUM_BIN / $CHROMEDRIVER_BIN, else the Debian packages on PATH."""
    browser = os.environ.get("CHROMIUM_BIN") or next(filter(None, map(shutil.which, BROWSER_CANDIDATES)), None)
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        pytest.fail(
            f"the browser tests need headless Chromium; {' and '.join(missing)} not found on PATH. "
            f"Install them with: {INSTALL_COMMAND}  (as root; scripts/setup_env.sh does it when run as root)",
            pytrace=False,
        )
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture(scope="module")
def chromium_paths() -> tuple[str, str]:
    return find_chromium()


@pytest.fixture(scope="module")
def browser(chromium_paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by Selenium, with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser_path, driver_path = chromium_paths
    options = Options()
    options.binary_location = browser_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
    profile: Path = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(180)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


APP_READY_TIMEOUT_S = 120.0
# Editor settings for a quiet, legible session: no first-run template browser, no workflow restored from the previous
# page load, no minimap or FPS overlay, full node detail at any zoom (for the screenshot), and the load-time checks
# and warnings that this test relies on switched on.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.Persist": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Validation.Workflows": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Workflow.ShowMissingModelsWarning": True,
}
LOCAL_STORAGE = {"vueNodesBannerDismissed": "true"}  # the "Introducing Nodes 2.0" banner


def post_setting(server_url: str, key: str, value: Any) -> None:
    request = urllib.request.Request(
        f"{server_url}/api/settings/{key}",
        data=json.dumps(value).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def open_editor(browser: Any, server_url: str) -> None:
    """Navigate to the editor and wait until the app is mounted and its node definitions are registered."""
    browser.get(server_url + "/")
    deadline = time.monotonic() + APP_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if browser.execute_script(
            "return !!(window.app && window.app.vueAppReady && window.app.graph && window.LiteGraph"
            " && LiteGraph.registered_node_types && LiteGraph.registered_node_types.KSampler)"
        ):
            return
        time.sleep(0.25)
    pytest.fail(f"the ComfyUI editor at {server_url} was not ready after {APP_READY_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def editor(browser: Any, comfy_server: Any) -> Any:  # noqa: F811  (the fixture imported above)
    """The browser on the server's editor, with quiet settings; each test reloads the page for a clean state."""
    for key, value in SETTINGS.items():
        post_setting(comfy_server.url, key, value)
    open_editor(browser, comfy_server.url)
    for key, value in LOCAL_STORAGE.items():
        browser.execute_script("localStorage.setItem(arguments[0], arguments[1])", key, value)
    return browser
