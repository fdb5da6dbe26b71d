"""Work kinds a stage runs, as in the CASA pipeline's task queue.

- a picklable Python callable (``fn(item)``, or ``fn()`` for a stage without items);
- a request object - ``command(argv)`` here, ``casa(task, ...)`` and ``mpirun(fn)`` in
  casa.py - that describes a call and runs it later, on a worker, with ``execute()``.

A callable (or a cell body) may also *return* a request; the worker then executes it, so
``%%pipestage`` cells can end with ``pipejupyter.casa("listobs", vis=item)``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.work import capture
from pipejupyter.work.fingerprint import digest


class WorkError(PipejupyterError, TypeError):
    """Something that cannot be run as stage work."""


class Work:
    """The contract: run one item on a worker; fingerprint; describe."""

    kind = "python"

    def run_item(self, value: Any, key: str, has_item: bool) -> Any:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def cpus(self) -> int:
        """CPUs one item keeps busy on its worker (a nested MPI session keeps several)."""
        return 1


class CallableWork(Work):
    kind = "python"

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def run_item(self, value: Any, key: str, has_item: bool) -> Any:
        return self.fn(value) if has_item else self.fn()

    def fingerprint(self) -> str:
        return digest("callable", self.fn)

    def describe(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class Request(Work):
    """A call described now, executed later (on a worker) by ``execute()``."""

    def bind(self, value: Any, key: str) -> Request:
        """This request for one item of a stage."""
        raise NotImplementedError

    def execute(self) -> Any:
        raise NotImplementedError

    def run(self) -> Any:
        """Execute here, in this process (outside any stage)."""
        return self.execute()

    def run_item(self, value: Any, key: str, has_item: bool) -> Any:
        return (self.bind(value, key) if has_item else self).execute()

    def fingerprint(self) -> str:
        return digest(type(self).__qualname__, vars(self))


def as_work(work: Any) -> Work:
    if isinstance(work, Work):
        return work
    if callable(work):
        return CallableWork(work)
    raise WorkError(
        f"cannot run {type(work).__name__} {work!r:.60} as stage work; "
        "accepted: a Python callable, "
        "pipejupyter.casa(task, ...), pipejupyter.command(argv), pipejupyter.mpirun(fn, nprocs=N)"
    )


def resolve(result: Any) -> Any:
    """Execute requests a callable returned (the worker side of 'return a request')."""
    for _ in range(8):  # a request returning a request is legal, a loop is not
        if not isinstance(result, Request):
            return result
        result = result.execute()
    raise WorkError("requests returned requests 8 times in a row; giving up")


# -- command lines -----------------------------------------------------------------


class CommandFailed(PipejupyterError, RuntimeError):
    def __init__(self, result: CommandResult) -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = ("; last output:\n  " + "\n  ".join(tail)) if tail else ""
        super().__init__(
            f"command {shlex.join(result.argv)} exited with status {result.returncode}{detail}"
        )


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Command(Request):
    """A LOFAR-style node script: argv, environment, working directory.

    With items, ``{item}`` and ``{key}`` in argv, env values and cwd are replaced by the
    item; when argv has no ``{item}``, the item is appended as the last argument.
    ``check=True`` makes a non-zero exit status fail the item (the result still carries
    stdout and stderr in the error).
    """

    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = None
    check: bool = True
    kind = "command"

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            self.argv = shlex.split(self.argv)
        if not self.argv or not all(isinstance(a, (str, os.PathLike)) for a in self.argv):
            raise WorkError(f"command needs a non-empty list of strings, got {self.argv!r}")
        self.argv = [os.fspath(a) for a in self.argv]
        if self.env is not None:
            if not isinstance(self.env, Mapping):
                raise WorkError(
                    "command env must be a mapping of names to strings, "
                    f"got {type(self.env).__name__}"
                )
            self.env = {str(k): str(v) for k, v in self.env.items()}
        if self.cwd is not None:
            self.cwd = os.fspath(self.cwd)

    def bind(self, value: Any, key: str) -> Command:
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)

        def fill(s: str) -> str:
            return s.replace("{item}", text).replace("{key}", key)

        argv = [fill(a) for a in self.argv]
        if not any("{item}" in a for a in self.argv):
            argv.append(text)
        env = {k: fill(v) for k, v in self.env.items()} if self.env else self.env
        return replace(self, argv=argv, env=env, cwd=fill(self.cwd) if self.cwd else self.cwd)

    def execute(self) -> CommandResult:
        env = {**os.environ, **(self.env or {})}
        started = time.monotonic()
        try:
            rc, out, err = run_streaming(self.argv, env=env, cwd=self.cwd, timeout=self.timeout)
        except (FileNotFoundError, PermissionError) as exc:  # as a shell reports it
            rc, out, err = (127 if isinstance(exc, FileNotFoundError) else 126), "", f"{exc}\n"
        result = CommandResult(self.argv, rc, out, err, time.monotonic() - started)
        if self.check and rc != 0:
            raise CommandFailed(result)
        return result

    def describe(self) -> str:
        return shlex.join(self.argv)

    def fingerprint(self) -> str:
        return digest("command", self.argv, self.env, self.cwd, self.check)


def command(
    argv: Sequence[str] | str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    *,
    timeout: float | None = None,
    check: bool = True,
) -> Command:
    """A command-line request: returns exit code, stdout and stderr when executed."""
    return Command(
        list(argv) if not isinstance(argv, str) else argv,
        dict(env) if env else None,
        cwd,
        timeout,
        check,
    )


def run_streaming(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> tuple[int, str, str]:
    """Run a process, passing its output line by line to the current item's capture as it
    comes (so it shows under the cell), and return (status, stdout, stderr)."""
    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
    # The pumps run in threads of their own: look up the item's capture here.
    item = capture.current()
    sink = item.write if item is not None else capture.write

    def pump(pipe: Any, stream: str) -> None:
        with pipe:
            for line in pipe:
                chunks[stream].append(line)
                sink(line, stream)

    threads = [
        threading.Thread(target=pump, args=(p, s), daemon=True)
        for p, s in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
    ]
    for t in threads:
        t.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(5)
        raise CommandFailed(
            CommandResult(
                list(argv),
                -9,
                "".join(chunks["stdout"]),
                f"timed out after {timeout:g} s\n" + "".join(chunks["stderr"]),
                timeout or 0,
            )
        ) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    for t in threads:
        t.join()
    return rc, "".join(chunks["stdout"]), "".join(chunks["stderr"])
