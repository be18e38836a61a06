"""Shared real-browser harness: a Jupyter server, headless Chromium, notebook driving.

Used by ``tests/browser/conftest.py`` (pytest fixtures) and ``benchmarks/bench_render.py``.
The recipe: Debian chromium (never ``playwright install``),
``--allow-root``, no token, no news pop-up, wait for the kernel to be idle before Run All,
the server in its own process group, stopped by killing that group only.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"

CHROMIUM = os.environ.get("AW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Which server each app name starts, and the URL path a notebook opens under.
APPS = {
    "lab": {"module": "jupyterlab", "cls": "LabApp", "prefix": "lab/tree"},
    "notebook": {"module": "notebook", "cls": "JupyterNotebookApp", "prefix": "notebooks"},
}

MATRIX = ".aw-panel.aw-matrix"
HEATMAP = ".aw-panel.aw-heatmap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ServerProcess:
    """A server started with ``start_new_session=True`` in a temp folder (``proc``, ``tmp``,
    ``log_path``, ``_log``): stopped by killing its own process group only."""

    proc: subprocess.Popen | None
    tmp: pathlib.Path
    log_path: pathlib.Path

    def _launch(self, cmd: list[str], cwd: pathlib.Path, health_url: str, what: str, timeout: float) -> None:
        """Start ``cmd`` in its own session, logging to ``log_path``, and wait until
        ``health_url`` answers 200 (stopping it and raising with the log tail otherwise)."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{what} did not answer within {timeout}s:\n{self.log_tail()}")

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pgid = os.getpgid(self.proc.pid)  # start_new_session: the group is ours alone
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class JupyterServer(_ServerProcess):
    """A JupyterLab or Notebook 7 server on a temp copy of some notebooks.

    ``root`` is a throwaway directory (the repo's notebooks are never modified); settings,
    workspaces and the runtime dir (kernel connection files) live under the same temp dir.
    """

    def __init__(self, app: str = "lab", notebooks: pathlib.Path | None = NOTEBOOKS, extra_env: dict | None = None):
        if app not in APPS:
            raise ValueError(f"app: expected one of {sorted(APPS)}, received {app!r}")
        self.app = app
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"aw-{app}-"))
        self.root = self.tmp / "root"
        if notebooks is not None:
            shutil.copytree(notebooks, self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        else:
            self.root.mkdir()
        self.runtime_dir = self.tmp / "runtime"
        self.settings_dir = self.tmp / "settings"
        self.workspaces_dir = self.tmp / "workspaces"
        for d in (self.runtime_dir, self.settings_dir, self.workspaces_dir):
            d.mkdir()
        notif = self.settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True)
        notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "server.log"
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTERLAB_SETTINGS_DIR": str(self.settings_dir),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.workspaces_dir),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self._clients: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "JupyterServer":
        spec = APPS[self.app]
        cls = spec["cls"]
        cmd = [
            sys.executable,
            "-m",
            spec["module"],
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--port-retries=0",
            "--ip=127.0.0.1",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={self.root}",
            f"--{cls}.expose_app_in_browser=True",
            f"--{cls}.user_settings_dir={self.settings_dir}",
            f"--{cls}.workspaces_dir={self.workspaces_dir}",
        ]
        if self.app == "lab":
            # JupyterNotebookApp has no news_url: passing it there makes the notebook
            # extension fail to link (the page then loads without window.jupyterapp).
            cmd.append(f"--{cls}.news_url=None")
        self._launch(cmd, self.root, f"{self.url}/api/status", f"jupyter {self.app}", timeout)
        return self

    def stop(self) -> None:
        for kc in self._clients.values():
            try:
                kc.stop_channels()
            except Exception:
                pass
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            # Kernels run in their own sessions (not our process group): shut them down first.
            try:
                for k in self.api("kernels"):
                    self.api(f"kernels/{k['id']}", method="DELETE")
            except Exception:
                pass
        self._terminate()

    # -- REST ----------------------------------------------------------------------------
    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/api/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def notebook_url(self, path: str) -> str:
        # ?reset: JupyterLab starts from an empty workspace (no restored tabs from a previous page).
        q = "?reset" if self.app == "lab" else ""
        return f"{self.url}/{APPS[self.app]['prefix']}/{path}{q}"

    def kernel_id(self, path: str, timeout: float = 30) -> str:
        """Id of the kernel of the (single) session on notebook ``path``."""
        deadline = time.monotonic() + timeout
        while True:
            sessions = [s for s in self.api("sessions") if s.get("path") == path and s.get("kernel")]
            if len(sessions) == 1:
                return sessions[0]["kernel"]["id"]
            if len(sessions) > 1:
                raise RuntimeError(f"{len(sessions)} sessions on {path}: {sessions}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no kernel session on {path}: {self.api('sessions')}")
            time.sleep(0.2)

    def shutdown_kernels(self) -> None:
        for kc in self._clients.values():
            kc.stop_channels()
        self._clients.clear()
        for s in self.api("sessions"):
            self.api(f"sessions/{s['id']}", method="DELETE")

    # -- the page's own kernel -----------------------------------------------------------
    def connection_file(self, kernel_id: str) -> pathlib.Path:
        # The server writes kernel-<id>.json into its runtime dir, which is
        # jupyter_core.paths.jupyter_runtime_dir() evaluated with the server's environment.
        from jupyter_core.paths import jupyter_runtime_dir

        old = os.environ.get("JUPYTER_RUNTIME_DIR")
        os.environ["JUPYTER_RUNTIME_DIR"] = self.env["JUPYTER_RUNTIME_DIR"]
        try:
            return pathlib.Path(jupyter_runtime_dir()) / f"kernel-{kernel_id}.json"
        finally:
            if old is None:
                os.environ.pop("JUPYTER_RUNTIME_DIR", None)
            else:
                os.environ["JUPYTER_RUNTIME_DIR"] = old

    def kernel_client(self, kernel_id: str):
        kc = self._clients.get(kernel_id)
        if kc is not None:
            return kc
        from jupyter_client import BlockingKernelClient

        kc = BlockingKernelClient()
        kc.load_connection_file(str(self.connection_file(kernel_id)))
        kc.allow_stdin = False
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        # IOPub is a SUB socket: until its subscription has reached the kernel, outputs are
        # lost. Execute no-ops until one round trip is seen on IOPub.
        for _ in range(20):
            try:
                kc.execute_interactive("", store_history=False, timeout=3, output_hook=lambda m: None)
                break
            except TimeoutError:
                continue
        else:
            raise TimeoutError(f"kernel {kernel_id}: no IOPub round trip")
        self._clients[kernel_id] = kc
        return kc

    def kernel_exec(self, kernel_id: str, code: str, timeout: float = 60) -> str:
        """Run ``code`` in kernel ``kernel_id`` (the one the page uses); return its stdout.

        An exception in ``code`` raises ``KernelError`` with the kernel's traceback.
        """
        kc = self.kernel_client(kernel_id)
        out: list[str] = []
        err: list[str] = []

        def hook(msg: dict) -> None:
            t = msg["msg_type"]
            c = msg["content"]
            if t == "stream":
                (out if c["name"] == "stdout" else err).append(c["text"])
            elif t == "error":
                err.append("\n".join(c.get("traceback", [])) or f"{c.get('ename')}: {c.get('evalue')}")

        reply = kc.execute_interactive(code, store_history=False, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            tb = _ANSI.sub("", "\n".join(c.get("traceback", [])) or "".join(err))
            raise KernelError(f"{c.get('ename')}: {c.get('evalue')}\n{tb}")
        return "".join(out)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class KernelError(RuntimeError):
    pass


# -- browser ----------------------------------------------------------------------------
def launch_browser(playwright, headless: bool = True):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=headless)


class ConsoleLog:
    """Console messages and uncaught page errors of one page, for assertions and artifacts."""

    def __init__(self, page) -> None:
        self.entries: list[dict] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)

    def _on_console(self, msg) -> None:
        loc = msg.location or {}
        self.entries.append(
            {"kind": msg.type, "text": msg.text, "url": loc.get("url", ""), "line": loc.get("lineNumber")}
        )

    def _on_pageerror(self, exc) -> None:
        self.entries.append({"kind": "pageerror", "text": f"{exc.name}: {exc.message}\n{exc.stack}", "url": ""})

    def errors(self) -> list[dict]:
        return [e for e in self.entries if e["kind"] in ("error", "pageerror")]

    def dump(self) -> str:
        return "\n".join(f"[{e['kind']}] {e['url']}:{e.get('line')} {e['text']}" for e in self.entries)


#: Console errors that come from this project (anywidget loads our ESM from a blob URL).
OURS = re.compile(r"attn_widgets|aw-|anywidget|blob:|matrix\.js|heatmap\.js|decode|colormap", re.I)


def our_errors(log: ConsoleLog) -> list[dict]:
    return [e for e in log.errors() if OURS.search(e["text"]) or OURS.search(e.get("url") or "")]


# -- driving a notebook ----------------------------------------------------------------------
_KERNEL_READY_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  const ctx = w && w.sessionContext;
  const k = ctx && ctx.session && ctx.session.kernel;
  return !!(ctx && ctx.isReady && k && k.connectionStatus === "connected" && k.status === "idle");
}"""

_EXECUTED_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  if (!w || !w.content || !w.content.widgets) return {done: false};
  const code = w.content.widgets.filter((c) => c.model.type === "code");
  const counts = code.map((c) => c.model.executionCount);
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const errors = [];
  for (const c of code) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === "error") errors.push(`${o.ename}: ${o.evalue}`);
    }
  }
  return {done: counts.every((n) => n !== null) && !!k && k.status === "idle", counts, errors};
}"""


def wait_kernel_idle(page, app: str, timeout: float = 60) -> None:
    """The notebook's kernel is connected and idle (an early Run All runs nothing)."""
    if app == "lab":
        # The status bar reads "| Idle" only once the kernel is ready.
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle")).first.wait_for(
            timeout=timeout * 1000
        )
    page.wait_for_function(_KERNEL_READY_JS, timeout=timeout * 1000, polling=200)


def run_all(page) -> None:
    """Run > Run All Cells, through the menu bar as a person would."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()


def wait_executed(page, timeout: float = 120) -> list[int]:
    """Every code cell has an execution count and the kernel is idle; raises on an error output."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_EXECUTED_JS)
        if state.get("errors"):
            raise AssertionError(f"notebook raised: {state['errors']}")
        if state.get("done"):
            return state["counts"]
        time.sleep(0.25)
    raise TimeoutError(f"cells not all executed after {timeout}s: {state}")


def wait_drawn(page, timeout: float = 60) -> None:
    """The matrix and heatmap both report at least one draw."""
    for sel in (MATRIX, HEATMAP):
        page.wait_for_function(
            """(sel) => { const e = document.querySelector(sel); return !!e && Number(e.dataset.draws || 0) >= 1; }""",
            arg=sel,
            timeout=timeout * 1000,
            polling=100,
        )


def open_notebook(page, server: JupyterServer, path: str, timeout: float = 120, run: bool = True) -> str:
    """Open ``path``, wait for the kernel, Run All, wait for execution and the widgets.

    Returns the kernel id of the page's session.
    """
    page.goto(server.notebook_url(path))
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout * 1000)
    wait_kernel_idle(page, server.app, timeout)
    kid = server.kernel_id(path)
    if run:
        run_all(page)
        wait_executed(page, timeout)
        wait_drawn(page, timeout)
    return kid


def canvas_stats(page, selector: str) -> dict:
    """Size and colour variety of the first canvas matched (blank canvas -> 1 colour)."""
    return page.evaluate(
        """(sel) => {
      const c = document.querySelector(sel);
      if (!c) return null;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      const step = Math.max(1, Math.floor(d.length / 4 / 20000));
      for (let i = 0; i < d.length; i += 4 * step) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      return {width: c.width, height: c.height, colours: seen.size};
    }""",
        selector,
    )


def matrix_cell_point(page, layer: int, head: int, root: str = MATRIX) -> tuple[float, float]:
    """Page coordinates of the centre of cell (layer, head) of the matrix canvas.

    Uses the grid geometry the view writes on the canvas (data-left/top/cell/pitch).
    """
    canvas = page.locator(f"{root} canvas.aw-canvas").first
    canvas.scroll_into_view_if_needed()
    g = canvas.evaluate(
        """(c) => { const r = c.getBoundingClientRect();
        return {x: r.left, y: r.top, left: +c.dataset.left, top: +c.dataset.top,
                cell: +c.dataset.cell, pitch: +c.dataset.pitch}; }"""
    )
    if not g["pitch"]:
        raise AssertionError(f"matrix canvas exposes no geometry: {g}")
    return (
        g["x"] + g["left"] + head * g["pitch"] + g["cell"] / 2,
        g["y"] + g["top"] + layer * g["pitch"] + g["cell"] / 2,
    )


def save_artifacts(page, log: ConsoleLog | None, name: str) -> list[pathlib.Path]:
    ARTIFACTS.mkdir(exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:150]
    out = []
    try:
        p = ARTIFACTS / f"{safe}.png"
        page.screenshot(path=str(p), full_page=True)
        out.append(p)
    except Exception as exc:  # a crashed page must not hide the test's own failure
        (ARTIFACTS / f"{safe}.screenshot-error.txt").write_text(repr(exc))
    if log is not None:
        p = ARTIFACTS / f"{safe}.console.log"
        p.write_text(log.dump())
        out.append(p)
    return out


def wait_dataset(page, selector: str, expected: dict, timeout: float = 30) -> None:
    """Wait until the element's data-* attributes equal ``expected`` (strings)."""
    try:
        page.wait_for_function(
            """([sel, want]) => { const e = document.querySelector(sel);
            return !!e && Object.entries(want).every(([k, v]) => e.dataset[k] === v); }""",
            arg=[selector, {k: str(v) for k, v in expected.items()}],
            timeout=timeout * 1000,
            polling=50,
        )
    except Exception as exc:
        got = page.evaluate("(sel) => { const e = document.querySelector(sel); return e && {...e.dataset}; }", selector)
        raise AssertionError(f"{selector}: expected data {expected}, has {got}") from exc


def strip_values(page, root: str = HEATMAP) -> list:
    """data-value of every strip token (None where unset)."""
    return page.evaluate(
        """(root) => [...document.querySelectorAll(root + " .aw-tok")].map(
            (s) => (s.dataset.value === undefined ? null : Number(s.dataset.value)))""",
        root,
    )


class NotebookPage:
    """A browser page on a notebook, its console log, and its kernel."""

    def __init__(self, browser, server: JupyterServer, path: str, viewport=(1400, 1000)) -> None:
        self.server = server
        self.path = path
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.log = ConsoleLog(self.page)
        self.kernel_id: str | None = None

    def open(self, run: bool = True, timeout: float = 120) -> "NotebookPage":
        try:
            self.kernel_id = open_notebook(self.page, self.server, self.path, timeout=timeout, run=run)
        except BaseException:
            save_artifacts(self.page, self.log, f"open-{self.server.app}-{self.path}")
            (ARTIFACTS / f"open-{self.server.app}-server.log").write_text(self.server.log_tail(20000))
            raise
        return self

    def kernel_exec(self, code: str, timeout: float = 60) -> str:
        """Run ``code`` in the kernel this page uses; return its stdout."""
        assert self.kernel_id, "open() the notebook first"
        return self.server.kernel_exec(self.kernel_id, code, timeout=timeout)

    def wait_kernel(self, code: str, expected: str, timeout: float = 15) -> str:
        """Poll ``kernel_exec(code)`` until its stripped stdout equals ``expected``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.kernel_exec(code).strip()
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            if self.kernel_id:
                try:
                    for s in self.server.api("sessions"):
                        if s.get("kernel", {}).get("id") == self.kernel_id:
                            self.server.api(f"sessions/{s['id']}", method="DELETE")
                except OSError:
                    pass
                kc = self.server._clients.pop(self.kernel_id, None)
                if kc is not None:
                    kc.stop_channels()


# -- marimo ----------------------------------------------------------------------------------
class MarimoServer(_ServerProcess):
    """``marimo run`` (an app: the notebook's cells run on page load) on a temp copy of a
    notebook, headless, no token, on a free port, in its own process group.

    marimo's config and cache go under the same temp dir, so the user's settings never
    change what the test sees.
    """

    def __init__(self, notebook: pathlib.Path, extra_env: dict | None = None):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="aw-marimo-"))
        self.path = self.tmp / notebook.name
        shutil.copy(notebook, self.path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "server.log"
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "XDG_CONFIG_HOME": str(self.tmp / "config"),
            "XDG_CACHE_HOME": str(self.tmp / "cache"),
            "XDG_STATE_HOME": str(self.tmp / "state"),
            "MARIMO_SKIP_UPDATE_CHECK": "1",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "MarimoServer":
        cmd = [
            sys.executable, "-m", "marimo", "run", str(self.path), "--headless", "--no-token",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-sandbox", "--no-check",
        ]
        self._launch(cmd, self.tmp, f"{self.url}/health", "marimo", timeout)
        return self

    def stop(self) -> None:
        self._terminate()
