"""Web tests: servers started as subprocesses, one per module and backend where the tests allow."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT_CONFTEST = str(Path(__file__).resolve().parents[1] / "conftest.py")


def _root(config):
    return next(p for p in config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == _ROOT_CONFTEST)


def pytest_configure(config):
    config.addinivalue_line("markers", "first_backend: run with module_url on the first configured backend only "
                                       "(what the test checks does not depend on the database)")


def pytest_generate_tests(metafunc):
    if "module_url" in metafunc.fixturenames:
        backends = list(_root(metafunc.config).SERVERS)
        if metafunc.definition.get_closest_marker("first_backend"):
            backends = backends[:1]
        metafunc.parametrize("module_url", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def module_url(request, tmp_path_factory) -> str:
    """An empty database on each backend, for one module's server."""
    server = _root(request.config).SERVERS[request.param]
    return server.url_for_test(tmp_path_factory.mktemp(f"web-{request.param}"))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium resolving no name but 127.0.0.1 (skips when Selenium or Chromium is missing)."""
    from browser import chromium

    with chromium() as driver:
        yield driver
