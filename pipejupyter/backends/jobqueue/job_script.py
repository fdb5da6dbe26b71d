"""What goes into a worker job script, and a Job class that submits with a clean environment.

Quoting rule for the exported environment (documented in docs/slurm.md):
- values copied from this process (``env.pass``) are single-quoted with shlex.quote, so
  they arrive byte for byte (spaces, quotes, ``$``, backslashes);
- values written in ``env.set`` are put in double quotes where only ``$VAR``/``${VAR}``
  expand in the job's shell on the compute node (``$SCRATCH/tmp`` means the node's scratch,
  as in a hand-written job script); command substitution, backticks, arithmetic and every
  other ``$`` form stay literal (see node_quote).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

from pipejupyter.environment.slurm import SLURM_NESTED_PATTERNS
from pipejupyter.environment.workers import WorkerEnvironment

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROBE_SCHEMES = ("tcp", "tls", "ws", "wss")


# The only expansions a written value may ask of the node's shell: $NAME and ${NAME}.
_NODE_VARIABLE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")


def node_quote(value: str) -> str:
    """Double-quote a user-written value for a POSIX shell on the compute node.

    ``$NAME`` and ``${NAME}`` are left to the shell; every other ``$`` is escaped, so
    command substitution ``$(...)``, arithmetic ``$((...))``/``$[...]``, special
    parameters and every other ``${...}`` form (``${X:-$(cmd)}``, ``${X@P}``, ``${X:N}``,
    which can evaluate a value as code) stay the characters written. ``"``, ``\\`` and
    backticks are escaped too.
    """
    parts = []
    last = 0
    for match in _NODE_VARIABLE.finditer(value):
        parts.append(_escape_literal(value[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_escape_literal(value[last:]))
    return '"' + "".join(parts) + '"'


def _escape_literal(text: str) -> str:
    """``text`` inside double quotes, every character literal (``\\`` first)."""
    for char in ("\\", '"', "`", "$"):
        text = text.replace(char, "\\" + char)
    return text


def export_lines(env: WorkerEnvironment) -> list[str]:
    """``export NAME=value`` lines for the job script prologue."""
    explicit = set(env.explicit)
    lines = []
    for name, value in env.variables.items():
        if not _NAME.match(name):
            logger.debug("not exporting %r: not a shell variable name", name)
            continue
        if name in explicit:
            lines.append(f"export {name}={node_quote(value)}")
            continue
        # Copied values of an enclosing SLURM job would recreate the nesting problem in the
        # job (SLURM_MEM_PER_CPU next to the new job's SLURM_MEM_PER_NODE).
        if any(fnmatch.fnmatchcase(name, p) for p in SLURM_NESTED_PATTERNS):
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines


def scheduler_probe(python: str, address: str | None) -> str | None:
    """A job-script line that ends the job at once when the scheduler is gone.

    A job that starts after its notebook died would otherwise wait for the nanny's
    connect timeout (~30 s) before giving up; a TCP connect to a closed port fails in
    milliseconds and costs no Dask import.
    """
    if not address:
        return None
    parsed = urlparse(address)
    if parsed.scheme not in PROBE_SCHEMES or not parsed.hostname:
        return None
    try:
        port = parsed.port
    except ValueError:  # a placeholder address (dry run)
        return None
    if not port:
        return None
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({parsed.hostname!r}, {port}), 10).close()\n"
        "except OSError as e:\n"
        f"    sys.exit('pipejupyter: scheduler {parsed.hostname}:{port} is not reachable (%s): "
        "the cluster that submitted this job is gone; ending the job' % e)\n"
    )
    return f"{python} -I -S -c {shlex.quote(code)} || exit 0"


class Ledger:
    """What one cluster's jobs did: every job id submitted, every failed submission."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}  # job id -> the name dask-jobqueue gave the job
        self.failures: list[tuple[str, str]] = []  # (worker name, message)
        self.waiting = False  # a scale() waits for these submissions and raises failures

    @property
    def job_ids(self) -> list[str]:
        return list(self.jobs)

    def take_failures(self) -> list[tuple[str, str]]:
        failures, self.failures = self.failures, []
        return failures


def submit_error_text(exc: BaseException, command: str) -> str:
    """dask-jobqueue's RuntimeError holds the whole command transcript: keep stderr."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{command} not found: {exc}"
    if "stderr:" in text:
        code = re.search(r"Exit code: (-?\d+)", text)
        stderr = text.split("stderr:", 1)[1].strip()
        stdout = (
            text.split("stdout:", 1)[1].split("stderr:", 1)[0].strip() if "stdout:" in text else ""
        )
        detail = stderr or stdout or "no output"
        return f"{command} failed (exit {code[1] if code else '?'}): {detail}"
    return f"{command} failed: {type(exc).__name__}: {text}"


def make_job_class(
    base: type,
    *,
    environ: Callable[[], dict[str, str]],
    ledger: Ledger,
    probe: bool = True,
) -> type:
    """A subclass of a dask-jobqueue Job that submits and cancels with ``environ()``,
    records job ids and failures in ``ledger``, and adds the scheduler probe."""
    import dask
    from distributed.core import Status

    command = base.submit_command.split()[0] if base.submit_command else "submit"

    class PipejupyterJob(base):
        _ledger = ledger

        def __init__(self, scheduler=None, name=None, **kwargs: Any) -> None:
            if probe:
                config_name = kwargs.get("config_name") or base.config_name
                python = (
                    kwargs.get("python")
                    or dask.config.get(f"jobqueue.{config_name}.python", None)
                    or sys.executable
                )
                prologue = kwargs.get("job_script_prologue")
                if prologue is None:
                    prologue = (
                        dask.config.get(f"jobqueue.{config_name}.job-script-prologue", None) or []
                    )
                line = scheduler_probe(python, scheduler)
                if line:
                    kwargs["job_script_prologue"] = [*prologue, line]
            super().__init__(scheduler, name, **kwargs)

        @classmethod
        async def _call(cls, cmd, **kwargs):
            # dask-jobqueue runs sbatch/qsub/scancel inheriting os.environ; these must not
            # see MPI launch variables or the variables of an enclosing SLURM job.
            kwargs.setdefault("env", environ())
            return await base._call(cmd, **kwargs)

        async def start(self) -> None:
            try:
                await super().start()
            except Exception as exc:
                # Recorded, not raised: dask would only log the traceback from a background
                # task. The backend's scale() raises it, and drops this job from the cluster.
                message = submit_error_text(exc, command)
                self._ledger.failures.append((str(self.name), message))
                log = logger.debug if self._ledger.waiting else logger.warning
                log("worker job %s was not submitted: %s", self.name, message)
                self.status = Status.running  # what ProcessInterface.__await__ insists on
                return
            if self.job_id:
                self._ledger.jobs[str(self.job_id)] = str(self.name)

    PipejupyterJob.__name__ = PipejupyterJob.__qualname__ = f"Pipejupyter{base.__name__}"
    return PipejupyterJob


def worker_names(name: str, spec: dict | None) -> list[str]:
    """Dask worker names of one job: ``name`` or ``name-0..n`` with processes > 1."""
    group = (spec or {}).get("group")
    return [f"{name}{suffix}" for suffix in group] if group else [str(name)]


def header_lines(
    script: str, prefixes: Iterable[str] = ("#SBATCH", "#PBS", "#$", "#BSUB", "#OAR", "#MSUB")
) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(tuple(prefixes))]
