"""Real-browser fixtures: a Jupyter server (JupyterLab and Notebook 7), headless Chromium,
and pages on notebooks whose kernel the test can talk to (``kernel_exec``).

Run with ``python -m pytest tests/browser -m browser``. Everything happens in temp copies:
the repo's notebooks are never modified. Failing tests leave a screenshot and the page's
console log in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil

import pytest

from . import harness as H

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Which front ends the session-scoped ``jupyter_server`` fixture is parametrized over.
APPS = [a for a in os.environ.get("AW_BROWSER_APPS", "lab,notebook").split(",") if a]


def _skip_or_fail(reason: str) -> None:
    # CI sets AW_REQUIRE_BROWSER=1: there a missing browser is a failure, never a silent skip.
    if os.environ.get("AW_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests required but cannot run: {reason}")
    pytest.skip(reason)


def _skip_reason() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "python playwright is not installed"
    if not (os.path.exists(H.CHROMIUM) or shutil.which(H.CHROMIUM)):
        return f"no chromium at {H.CHROMIUM} (apt-get install chromium; never `playwright install`)"
    return None


@pytest.fixture(scope="session", params=APPS)
def jupyter_server(request):
    """A JupyterLab (``lab``) or Notebook 7 (``notebook``) server on a temp copy of notebooks/."""
    reason = _skip_reason()
    if reason:
        _skip_or_fail(reason)
    server = H.JupyterServer(request.param).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    reason = _skip_reason()
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = H.launch_browser(pw)
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def open_notebook(browser, jupyter_server):
    """Factory: ``open_notebook("01_quickstart.ipynb")`` -> an executed :class:`NotebookPage`."""
    pages: list[H.NotebookPage] = []

    def _open(path: str, run: bool = True) -> H.NotebookPage:
        nb = H.NotebookPage(browser, jupyter_server, path)
        pages.append(nb)
        return nb.open(run=run)

    _open.pages = pages
    yield _open
    for nb in pages:
        nb.close()


@pytest.fixture(scope="module")
def quickstart(browser, jupyter_server):
    """notebooks/01_quickstart.ipynb, run top to bottom, shared by a module's tests."""
    nb = H.NotebookPage(browser, jupyter_server, "01_quickstart.ipynb").open()
    yield nb
    nb.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or rep.when not in ("setup", "call"):
        return
    funcargs = getattr(item, "funcargs", {}) or {}
    pages = []
    for value in funcargs.values():
        if isinstance(value, H.NotebookPage):
            pages.append(value)
        pages.extend(getattr(value, "pages", []) or [])
    for i, nb in enumerate(pages):
        name = f"{item.nodeid}-{i}" if i else item.nodeid
        saved = H.save_artifacts(nb.page, nb.log, name)
        rep.sections.append(("browser artifacts", "\n".join(str(p) for p in saved)))
