"""Small, time-limited questions to SLURM: partition limits, job states, sbatch --test-only.

Every call has a short timeout and returns None/empty when SLURM cannot answer, so a
slow or missing controller never blocks a notebook: the checks are a courtesy that
turns a certain failure into a clear message before anything is submitted.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

QUERY_TIMEOUT = 5.0
UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "")
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")


def run(cmd: list[str], *, env: Mapping[str, str] | None = None, timeout: float = QUERY_TIMEOUT):
    """Run a SLURM client command; None when it is missing or does not answer in time."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("%s did not answer: %s", cmd[0], exc)
        return None


def parse_time(text: str) -> int | None:
    """SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in
    seconds; None for UNLIMITED. Raises ValueError for anything else."""
    text = str(text).strip()
    if text.upper() in UNLIMITED:
        return None
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a SLURM time")
    parts = [int(p) for p in m["rest"].split(":")]
    if m["days"] is not None:
        # After "D-" the fields are hours[:minutes[:seconds]].
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return int(m["days"]) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def format_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output: one line per record of KEY=VALUE tokens."""
    out = []
    for line in text.splitlines():
        record = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                record[key] = value
        if record:
            out.append(record)
    return out


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass
class Partition:
    name: str
    default: bool
    state: str
    max_time: int | None  # seconds; None: unlimited
    max_cpus_per_node: int | None
    max_mem_per_node: int | None  # MB
    node_cpus: int | None  # the largest node of the partition
    node_memory: int | None  # MB, the largest node of the partition


def partitions(env: Mapping[str, str] | None = None) -> dict[str, Partition] | None:
    """Every partition with its limits; None when scontrol cannot tell."""
    parts = run(["scontrol", "show", "partition", "-o"], env=env)
    nodes = run(["scontrol", "show", "node", "-o"], env=env)
    if parts is None or parts.returncode != 0:
        return None
    node_records = _records(nodes.stdout) if nodes is not None and nodes.returncode == 0 else []
    out: dict[str, Partition] = {}
    for rec in _records(parts.stdout):
        name = rec.get("PartitionName")
        if not name:
            continue
        members = [n for n in node_records if name in (n.get("Partitions") or "").split(",")]
        cpus = [_int(n.get("CPUEfctv") or n.get("CPUTot")) for n in members]
        memory = [_int(n.get("RealMemory")) for n in members]
        try:
            max_time = parse_time(rec.get("MaxTime", "UNLIMITED"))
        except ValueError:
            max_time = None
        out[name] = Partition(
            name=name,
            default=rec.get("Default") == "YES",
            state=rec.get("State", "UP"),
            max_time=max_time,
            max_cpus_per_node=_int(rec.get("MaxCPUsPerNode")),
            max_mem_per_node=_int(rec.get("MaxMemPerNode")),
            node_cpus=max((c for c in cpus if c), default=None),
            node_memory=max((m for m in memory if m), default=None),
        )
    return out


def job_states(job_ids: list[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{job_id: STATE}`` for the jobs SLURM still knows (PENDING, RUNNING, ...)."""
    if not job_ids:
        return {}
    done = run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], env=env, timeout=3)
    if done is None or done.returncode != 0:
        return {}
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


#: states of a job whose batch script has finished (squeue -j lists none of them but
#: COMPLETING; scontrol shows them for MinJobAge seconds)
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "COMPLETING",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


def job_end(job_id: str, env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """How a job ended: ``{state, exit_code, reason, stdout, stderr}`` from ``scontrol show
    job`` (it knows a finished job for MinJobAge seconds; sacct needs accounting, often off),
    ``{state: "ENDED"}`` when SLURM no longer knows the job at all; None while the job is
    still live or SLURM does not answer (nothing can be concluded)."""
    done = run(["scontrol", "show", "job", "-o", str(job_id)], env=env, timeout=3)
    if done is None:
        return None
    if done.returncode != 0:
        if "Invalid job id" in (done.stderr or ""):
            return {"state": "ENDED", "reason": "no longer known to SLURM (purged)"}
        return None
    record = next(iter(_records(done.stdout)), {})
    state = record.get("JobState", "")
    if state not in ENDED_STATES:
        return None
    code = record.get("ExitCode", "")
    status, _, signal = code.partition(":")
    return {
        "state": state,
        "exit_code": f"{status} (signal {signal})" if signal not in ("", "0") else status,
        "reason": "" if record.get("Reason") in (None, "None") else record["Reason"],
        "stdout": record.get("StdOut", ""),
        "stderr": record.get("StdErr", ""),
    }


def cancel(job_ids: list[str], env: Mapping[str, str] | None = None) -> None:
    if job_ids:
        run(["scancel", *job_ids], env=env, timeout=10)


def test_only(script: str, env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Ask sbatch whether it would accept ``script``, without submitting it.

    Returns (accepted, sbatch's message). Unanswered means accepted: the real
    submission will then report whatever is wrong.
    """
    fd, path = tempfile.mkstemp(prefix="pipejupyter-check-", suffix=".sh")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(script)
        done = run(["sbatch", "--test-only", path], env=env, timeout=15)
    finally:
        os.unlink(path)
    if done is None:
        return True, ""
    message = (done.stderr or done.stdout).strip()
    return done.returncode == 0, message
