"""The offline /docs page in a real headless Chromium: it renders the users resource and a
"Try it out" call returns 200, with every name but 127.0.0.1 unresolvable (no CDN can help)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from served import Served

APP = Path(__file__).resolve().parent / "apps" / "rest_app.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
if not (CHROMIUM and DRIVER):
    pytest.skip("Chromium and chromedriver are missing: apt-get install chromium chromium-driver "
                "(.ci/run installs them)", allow_module_level=True)

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium: no usage statistics sent anywhere
    profile = tempfile.mkdtemp(prefix="df-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_docs_render_offline_and_try_it_out(browser, tmp_path):
    with Served(APP, f"sqlite:///{tmp_path / 'docs.db'}", tmp_path) as app:
        assert app.http.post("/users", json={"name": "Ann", "email": "ann@x.test"}).status_code == 201
        browser.get(f"{app.base}/docs")
        wait = WebDriverWait(browser, 60)
        op = wait.until(EC.element_to_be_clickable((By.ID, "operations-users-list_users")))
        assert "users" in browser.find_element(By.ID, "operations-tag-users").text
        op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-users-list_users .try-out__btn"))).click()
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-users-list_users .execute"))).click()
        status = wait.until(EC.visibility_of_element_located(
            (By.CSS_SELECTOR, "#operations-users-list_users .live-responses-table tr.response .response-col_status")))
        assert status.text.strip().startswith("200")
        body = browser.find_element(By.CSS_SELECTOR, "#operations-users-list_users .live-responses-table").text
        assert "ann@x.test" in body
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(u.startswith(app.base) for u in loaded), loaded
