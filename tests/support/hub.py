"""The JupyterHub of ci/hub.sh: its settings, its REST API, the user's lab behind it.

The hub spawns the user's JupyterLab as a SLURM job running as that Linux user (alice).
Tests reach everything through the hub's public port only: the REST API with the
service token of ci/hub.sh, the lab's own API under ``/user/<name>/`` with that token,
and Chromium after logging in through the hub's login form.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.common import ROOT, require

STATE_DIRS = (ROOT / ".ci-state" / "hub", Path("/var/tmp/pipejupyter-hub"))
VARIABLES = {
    "url": "PIPEJUPYTER_TEST_HUB_URL",
    "user": "PIPEJUPYTER_TEST_HUB_USER",
    "password": "PIPEJUPYTER_TEST_HUB_PASSWORD",
    "token": "PIPEJUPYTER_TEST_HUB_TOKEN",
    "state": "PIPEJUPYTER_TEST_HUB_STATE",
}


def _from_env_file() -> dict[str, str]:
    for state in STATE_DIRS:
        env_file = state / "env.sh"
        if env_file.is_file():
            found = {}
            for word in env_file.read_text().split():
                name, _, value = word.partition("=")
                found[name] = value.strip("'\"")
            return found
    return {}


@cache
def hub_settings() -> dict[str, str] | None:
    """url, user, password, token, state of the running hub, or None when none answers."""
    source = os.environ if os.environ.get(VARIABLES["url"]) else _from_env_file()
    settings = {key: source.get(name, "") for key, name in VARIABLES.items()}
    if not all(settings.values()):
        return None
    try:
        with urllib.request.urlopen(f"{settings['url']}/hub/api/", timeout=5) as answer:
            if answer.status != 200:
                return None
    except OSError:
        return None
    return settings


def require_hub() -> Hub:
    settings = hub_settings()
    require(
        settings is not None,
        "the JupyterHub of ci/hub.sh (ci/hub.sh install && ci/hub.sh start; "
        ". .ci-state/hub/env.sh), with SLURM running",
    )
    return Hub(settings)


class Hub:
    """One hub and its one test user."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.url = settings["url"]
        self.user = settings["user"]
        self.password = settings["password"]
        self.token = settings["token"]
        self.state = Path(settings["state"])
        self.prefix = f"/user/{self.user}/"

    # -- HTTP ---------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, *, token: bool = True, timeout=60
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, decoded JSON or text, headers with lower-case names) of ``path`` on the
        hub's public port; redirects are not followed."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/{path.lstrip('/')}", data=data, method=method, headers=headers
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=timeout) as answer:
                return answer.status, _decode(answer.read()), _lower(answer.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read()), _lower(exc.headers)

    def lab(self, method: str, path: str, body: Any = None, timeout=120) -> tuple[int, Any]:
        """A request to the user's lab (``/user/<name>/<path>``) through the hub."""
        status, data, _ = self.request(method, self.prefix + path, body, timeout=timeout)
        return status, data

    # -- the user's server ----------------------------------------------------------------
    def server_running(self) -> bool:
        status, data, _ = self.request("GET", f"hub/api/users/{self.user}")
        return status == 200 and bool((data.get("servers") or {}).get(""))

    def spawn(self, options: dict[str, Any] | None = None, timeout: float = 180) -> float:
        """Start the user's server (as a SLURM job); seconds until its API answers
        through the hub."""
        t0 = time.monotonic()
        status, data, _ = self.request("POST", f"hub/api/users/{self.user}/server", options or {})
        if status not in (201, 202):
            raise RuntimeError(f"spawn refused: {status} {data}\n{self.log_tail()}")
        while time.monotonic() - t0 < timeout:
            if self.lab("GET", "api/status", timeout=10)[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise TimeoutError(f"the lab did not answer within {timeout} s\n{self.log_tail()}")

    def stop_server(self, timeout: float = 60) -> None:
        """Stop the user's server through the hub's API and wait until the hub says so."""
        status, data, _ = self.request("DELETE", f"hub/api/users/{self.user}/server")
        if status not in (202, 204, 400):  # 400: not running
            raise RuntimeError(f"stop refused: {status} {data}")
        deadline = time.monotonic() + timeout
        while self.server_running():
            if time.monotonic() > deadline:
                raise TimeoutError("the hub still lists the user's server")
            time.sleep(0.2)

    # -- what runs for the user ------------------------------------------------------------
    def jobs(self) -> dict[str, tuple[str, str]]:
        """``{job_id: (name, state)}`` of the user's queued SLURM jobs."""
        out = subprocess.run(
            ["squeue", "-h", "-u", self.user, "-o", "%i|%j|%T"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return {
            parts[0]: (parts[1], parts[2])
            for parts in (line.split("|") for line in out.splitlines())
            if len(parts) == 3
        }

    def wait_no_jobs(self, timeout: float = 60) -> float | None:
        """Seconds until the user has no job queued; None if some remain at ``timeout``."""
        t0 = time.monotonic()
        while self.jobs():
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.1)
        return time.monotonic() - t0

    def processes(self) -> list[str]:
        """Command lines of the user's processes."""
        out = subprocess.run(
            ["ps", "-u", self.user, "-o", "args="], capture_output=True, text=True, timeout=10
        ).stdout
        return [line for line in out.splitlines() if line.strip()]

    @property
    def home(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir)

    @property
    def runtime_dir(self) -> Path:
        """Where the user's pipejupyter discovery records are."""
        return self.home / ".local" / "share" / "jupyter" / "runtime" / "pipejupyter"

    def write_as_user(self, path: Path, text: str) -> None:
        """Write a file the user owns (the lab runs as the user and must read it)."""
        entry = pwd.getpwnam(self.user)
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == self.home or not str(parent).startswith(str(self.home)):
                break
            os.chown(parent, entry.pw_uid, entry.pw_gid)
        path.write_text(text)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.state / "hub.log").read_text()[-n:]
        except OSError:
            return ""

    # -- a kernel in the user's lab ----------------------------------------------------------
    def execute(self, code: str, timeout: float = 180) -> str:
        """Run ``code`` in a new kernel of the user's lab (through the hub's websocket
        proxy); its stdout, stderr and errors as text; the kernel is shut down after."""
        status, kernel = self.lab("POST", "api/kernels", {"name": "python3"})
        if status != 201:
            raise RuntimeError(f"no kernel: {status} {kernel}")
        try:
            return asyncio.run(self._execute(kernel["id"], code, timeout))
        finally:
            self.lab("DELETE", f"api/kernels/{kernel['id']}")

    async def _execute(self, kernel_id: str, code: str, timeout: float) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        ws_url = self.url.replace("http", "ws", 1) + f"{self.prefix}api/kernels/{kernel_id}"
        ws_url += "/channels"
        request = HTTPRequest(ws_url, headers={"Authorization": f"token {self.token}"})
        conn = await websocket_connect(request)
        msg_id = uuid.uuid4().hex
        conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": self.user,
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False},
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no result within {timeout} s; output so far: {out}")
                raw = await asyncio.wait_for(conn.read_message(), left)
                if raw is None:
                    raise RuntimeError(f"the kernel's websocket closed; output so far: {out}")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    out.append(f"{content['ename']}: {content['evalue']}")
                elif kind in ("execute_result", "display_data"):
                    out.append(content["data"].get("text/plain", ""))
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
        finally:
            conn.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _decode(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def login(page: Any, hub: Hub) -> None:
    """Log in through the hub's own login form and wait for the lab's shell."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("input#username_input", hub.user)
    page.fill("input#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(f"**{hub.prefix}lab**", timeout=120_000)
