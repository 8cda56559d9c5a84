"""Web tests: servers started as subprocesses, one per module and backend where the tests allow."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT_CONFTEST = str(Path(__file__).resolve().parents[1] / "conftest.py")


def _root(config):
    return next(p for p in config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == _ROOT_CONFTEST)


def pytest_generate_tests(metafunc):
    if "module_url" in metafunc.fixturenames:
        metafunc.parametrize("module_url", list(_root(metafunc.config).SERVERS), indirect=True, scope="module")


@pytest.fixture(scope="module")
def module_url(request, tmp_path_factory) -> str:
    """An empty database on each backend, for one module's server."""
    server = _root(request.config).SERVERS[request.param]
    return server.url_for_test(tmp_path_factory.mktemp(f"web-{request.param}"))
