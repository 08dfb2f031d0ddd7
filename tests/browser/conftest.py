"""Browser fixtures: the e2e ``comfy_server`` (one real ComfyUI server per test module) and headless Chromium.

Chromium and chromedriver come from Debian (``apt-get install -y chromium chromium-driver``; scripts/setup_env.sh
installs them when run as root). Without them the browser tests FAIL with that command: they are never skipped.
"""

import os
import shutil
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
