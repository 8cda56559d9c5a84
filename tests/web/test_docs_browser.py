"""The offline /docs page in a real headless Chromium: it renders the users resource and a
"Try it out" call returns 200, with every name but 127.0.0.1 unresolvable (no CDN can help)."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import off_host, requested_urls
from served import Served

APP = Path(__file__).resolve().parent / "apps" / "rest_app.py"
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


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
        requested = requested_urls(browser)
        assert f"{app.base}/docs/assets/swagger-ui-bundle.js" in requested and not off_host(requested), requested
