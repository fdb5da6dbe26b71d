"""A real `jupyter lab` in an isolated directory and Debian's Chromium driven by Playwright.

Used by tests/e2e/test_browser.py and benchmarks/panel_start.py. Nothing here is mocked:
the server loads the installed lab extension and the pipejupyter server extension.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.common import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium floods a closed network with refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PANEL_TAB = '.lm-TabBar-tab[data-id="pipejupyter-sidebar"]'


def labextension_problem() -> str | None:
    """Why the installed lab extension cannot be tested, or None when it can."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter")), "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    listing = result.stdout + result.stderr
    line = next((ln for ln in listing.splitlines() if ln.strip().startswith("pipejupyter ")), "")
    if "enabled" not in line or "OK" not in line:
        return "the pipejupyter lab extension is not installed and enabled (pip install -e .)"
    built = ROOT / "pipejupyter" / "labextension" / "package.json"
    installed = (
        Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "pipejupyter" / "package.json"
    )
    if built.is_file() and installed.is_file():

        def entry(path: Path) -> str:
            return (
                json.loads(path.read_text()).get("jupyterlab", {}).get("_build", {}).get("load", "")
            )

        if entry(built) != entry(installed):
            return (
                "the installed lab extension is older than the build in pipejupyter/labextension "
                "(reinstall: .venv/bin/pip install -e . --no-deps)"
            )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` (or `jupyter server`) on loopback with its own HOME, config, data,
    runtime and work dirs."""

    def __init__(
        self,
        base: Path,
        *,
        expose_app: bool = True,
        app: str = "lab",
        disabled_extensions: tuple[str, ...] = (),
    ) -> None:
        self.base = base
        self.app = app  # "lab", or "server" for jupyter_server alone
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = base / "work"
        self.runtime = base / "pipejupyter-runtime"
        dirs = {
            name: base / name
            for name in ("home", "config", "data", "jupyter-runtime", "settings", "workspaces")
        }
        for d in [*dirs.values(), self.work, self.runtime]:
            d.mkdir(parents=True, exist_ok=True)
        disabled = {"@jupyterlab/apputils-extension:announcements": True}
        disabled.update({name: True for name in disabled_extensions})
        page_config: dict[str, Any] = {"disabledExtensions": disabled}
        if expose_app:
            page_config["exposeAppInBrowser"] = True  # window.jupyterapp, to run lab commands
        (dirs["config"] / "labconfig").mkdir(exist_ok=True)
        (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(page_config))
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "PIPEJUPYTER_CONFIG"},
            "HOME": str(dirs["home"]),
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["jupyter-runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "PIPEJUPYTER_RUNTIME_DIR": str(self.runtime),
            "PYTHONPATH": str(ROOT),
        }
        self.log_path = base / f"jupyter-{app}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> LabServer:
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("jupyter")),
                self.app,
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                f"--ServerApp.token={self.token}",
                "--allow-root",
                f"--ServerApp.root_dir={self.work}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "api/status")[0] == 200:
                    return self
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer in {timeout} s: {self.log_tail()}")

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 120
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def clusters(self) -> list[dict[str, Any]]:
        status, data = self.request("GET", "pipejupyter/clusters")
        assert status == 200, data
        return data["clusters"]

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-n:]
        return ""

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1280, 760)) -> Iterator[Any]:
    """A fresh Chromium page (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


def open_lab(page: Any, server: LabServer, path: str = "") -> None:
    """Load JupyterLab (optionally with a document open) and wait until the shell is up."""
    target = f"{server.url}/lab/tree/{path}" if path else f"{server.url}/lab"
    page.goto(f"{target}?token={server.token}")
    page.locator(PANEL_TAB).wait_for(timeout=120_000)


def open_panel(page: Any) -> Any:
    """Click the sidebar tab; return the panel once it lists the profiles."""
    page.locator(PANEL_TAB).click()
    panel = page.locator("#pipejupyter-sidebar")
    panel.locator('li.pj-profile[data-profile="local"]').wait_for(timeout=60_000)
    return panel


def notebook(cells: list[str]) -> dict[str, Any]:
    return {
        "type": "notebook",
        "format": "json",
        "content": {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "cells": [
                {
                    "cell_type": "code",
                    "id": f"cell-{i}",
                    "source": src,
                    "metadata": {},
                    "outputs": [],
                    "execution_count": None,
                }
                for i, src in enumerate(cells)
            ],
        },
    }
