"""Headless Chromium for the web tests (Debian's chromium and chromedriver, driven by Selenium).

Every host name but 127.0.0.1 is unresolvable inside it, so a page that needs a CDN fails to load
instead of reaching out; ``requested_urls`` lists what the page asked for, to prove it asked for
nothing else. Used through the ``browser`` fixture (tests/web/conftest.py), which skips the test
when Selenium, Chromium or its driver is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: URLs that are no request to any host: inline data, and the browser's own pages (its start page).
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-untrusted", "chrome-extension", "devtools"}


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driver that logs the network requests of the page (``requested_urls``)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and chromedriver are missing: apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium: no usage statistics sent anywhere
    profile = tempfile.mkdtemp(prefix="df-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--lang=en-US", f"--user-data-dir={profile}",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver: Any) -> list[str]:
    """The URLs the browser's pages requested since the last call (from the DevTools network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def off_host(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` that go to a host other than loopback."""
    return [u for u in urls if urlsplit(u).scheme not in LOCAL_SCHEMES and urlsplit(u).hostname not in LOOPBACK]
