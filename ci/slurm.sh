#!/usr/bin/env bash
# ci/slurm.sh - a real, single-node SLURM (Debian's slurm 22.05 + munge) for tests.
#
# Usage:
#   ci/slurm.sh install   apt-get install slurmctld slurmd slurm-client munge (root; no-op if present)
#   ci/slurm.sh start     write the config, start munged + slurmctld + slurmd, wait for the node
#                         to be idle; prints "export SLURM_CONF=<path>" (also in <state>/env.sh)
#   ci/slurm.sh stop      cancel all jobs, stop the daemons this script started, leave no processes
#   ci/slurm.sh status    exit 0 and print sinfo if SLURM answers, exit 1 otherwise
#   ci/slurm.sh conf      print the SLURM_CONF path
#
# Environment:
#   SLURM_STATE_DIR   config, state, spool, pid and log files (default: <repo>/.ci-state/slurm)
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 30)
#   SLURM_NODE_CPUS   CPUs the node declares (default: 64, or nproc if that is more). Declaring
#                     more than the machine has lets tests run many 1-CPU worker jobs at once
#                     (a hub-spawned lab holds one CPU of its own); slurmd accepts the
#                     declaration through SlurmdParameters=config_overrides.
#
# The machine has no systemd (PID 1 is not an init that manages services), so every
# daemon is started by hand and tracked through a pid file in the state directory.
# Jobs run as root (SlurmUser=root): this is a throwaway test cluster, not a shared one.
# The partition is called "debug" with MaxTime=1:00:00 and EnforcePartLimits=ALL so tests
# can provoke submit-time errors, e.g. `sbatch -t 02:00:00` prints
#   sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)
# start on a running cluster leaves it alone (jobs survive); a changed config (e.g. more
# memory) takes effect after stop + start. The first job after a fresh start waits ~3 s
# for the controller's first scheduling pass; later ones start in ~1 s.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SLURM_STATE_DIR:-$REPO_ROOT/.ci-state/slurm}"
CONF="$STATE/slurm.conf"
START_TIMEOUT="${SLURM_START_TIMEOUT:-30}"
PARTITION=debug
PACKAGES=(slurmctld slurmd slurm-client munge libpmix2)

# Clients (sinfo, squeue, scancel) called from this script must see our config.
export SLURM_CONF="$CONF"

log() { echo "slurm.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (daemons run as root/munge, apt-get needs root)"
}

# --- process helpers ------------------------------------------------------------------

# True if PID exists and is not a zombie. kill -0 is not enough: PID 1 here reaps dead
# daemons late, so a crashed slurmctld lingers as state Z and kill -0 still succeeds.
alive() {
    local pid="$1" stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # Field 3 follows the ")" that closes the command name (which may contain spaces).
    [ "$(echo "${stat##*) }" | cut -d' ' -f1)" != Z ]
}

# The pid from a pid file, if that process is alive and is the expected program.
# Checking the name guards against a stale pid file whose pid was reused.
pid_from() {
    local file="$1" name="$2" pid
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

# All descendants of a pid (children first is not needed: we SIGKILL the lot).
descendants() {
    local pid="$1" child
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

# Pids signalled by stop, so it can wait for them to vanish from the process table.
SIGNALLED=()

# Send SIGTERM, wait up to $2 seconds, then SIGKILL.
stop_pid() {
    local pid="$1" wait_s="${2:-5}" deadline
    alive "$pid" || return 0
    SIGNALLED+=("$pid")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + wait_s ))
    while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    fi
}

# slurmstepd processes that belong to this cluster: they keep the slurmd log file of our
# state directory open, which tells them apart from any other SLURM on the machine.
our_stepds() {
    local pid fd
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        for fd in "/proc/$pid/fd/"*; do
            case "$(readlink "$fd" 2>/dev/null || true)" in
                "$STATE/log/"*) echo "$pid"; break ;;
            esac
        done
    done
}

# slurmstepd ignores SIGTERM and outlives slurmd: SIGKILL it and what it launched
# (the job's processes would otherwise live on, reparented to PID 1).
kill_stepds() {
    local pid p
    for pid in $(our_stepds); do
        for p in $(descendants "$pid") "$pid"; do
            kill -KILL "$p" 2>/dev/null || true
            SIGNALLED+=("$p")
        done
    done
}

# --- install --------------------------------------------------------------------------

installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

cmd_install() {
    if installed; then
        log "packages already installed"
        return 0
    fi
    need_root
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only when something is missing: it is the slow part (and needs network).
    # Other jobs on the machine may run apt-get at the same time: wait for the dpkg lock
    # instead of failing at once with "Could not get lock /var/lib/dpkg/lock-frontend".
    local lock=(-o DPkg::Lock::Timeout=300)
    apt-get "${lock[@]}" update -q
    # No recommends: they pull in mail servers and docs we do not need.
    apt-get "${lock[@]}" install -y -q --no-install-recommends "${PACKAGES[@]}"
    installed || die "packages still missing after apt-get install"
}

# --- configuration --------------------------------------------------------------------

write_conf() {
    local host cpus mem_mb real_mb margin tmp
    host="$(hostname -s)"
    cpus="${SLURM_NODE_CPUS:-64}"
    [ "$cpus" -ge "$(nproc)" ] || cpus="$(nproc)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    # slurmd drains a node that reports less memory than RealMemory, so leave a margin:
    # 5% but at least 512 MB. On a 24 GiB machine this leaves ~22 GiB for 1 GiB jobs.
    margin=$(( mem_mb / 20 )); [ "$margin" -ge 512 ] || margin=512
    real_mb=$(( mem_mb - margin )); [ "$real_mb" -ge 512 ] || real_mb=512

    mkdir -p "$STATE/state" "$STATE/spool" "$STATE/log" "$STATE/run"
    tmp="$(mktemp "$STATE/slurm.conf.XXXXXX")"
    cat >"$tmp" <<EOF
# Generated by ci/slurm.sh - single-node test cluster. Do not edit; rerun ci/slurm.sh start.
ClusterName=pipejupyter-ci
# Name and address: the node talks to itself over loopback only.
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# Plugins that work without systemd/cgroups: cgroup-based ones fail on this machine.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
# Per-core and per-memory allocation, so several 1-CPU jobs share the node
# (select/linear would hand out the whole node and leave the second job pending).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job without --mem takes all memory of the node.
DefMemPerCPU=256
# Schedule every second instead of the default 60 s, so tests do not wait.
SchedulerParameters=sched_interval=1
# A node that was down comes back by itself when slurmd registers again.
ReturnToService=2
# Short grace between SIGTERM and SIGKILL on scancel/timeout, to keep teardown fast.
KillWait=5
# Reject at submit time jobs that break partition limits (walltime over MaxTime, more CPUs
# than the node has); by default sbatch accepts them and they stay pending forever.
EnforcePartLimits=ALL
InactiveLimit=0
# Trust the declared CPUs and memory rather than draining a node that has fewer.
SlurmdParameters=config_overrides
MinJobAge=30
# Everything under the state directory: nothing is written to /etc or /var.
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mb} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=1:00:00 State=UP
EOF
    # Only replace the file when it changed, so a running cluster keeps a stable config.
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$CONF"
    fi
    echo "export SLURM_CONF=$CONF" >"$STATE/env.sh"
}

# --- start ----------------------------------------------------------------------------

# munge -n blocks ~2 s per try while munged is down, so bound each try with timeout(1)
# and the whole wait with a wall-clock deadline rather than a number of tries.
munge_works() {
    timeout 3 munge -n </dev/null 2>/dev/null | timeout 3 unmunge >/dev/null 2>&1
}

show_logs() {
    local f
    for f in /var/log/munge/munged.log "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log"; do
        [ -f "$f" ] || continue
        echo "----- tail $f" >&2
        tail -n 20 "$f" >&2 || true
    done
}

start_munged() {
    local deadline pid
    if munge_works; then
        return 0  # ours from an earlier start, or a system munged: either way usable.
    fi
    [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (run: $0 install)"
    # munged wants its socket directory to exist and belong to the munge user;
    # /run is a tmpfs, so it is gone after a reboot.
    install -d -o munge -g munge -m 0755 /run/munge
    # A stale pid file / socket from a killed munged makes it refuse to start.
    if [ -s /run/munge/munged.pid ] && ! pid_from /run/munge/munged.pid munged >/dev/null; then
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    fi
    runuser -u munge -- /usr/sbin/munged
    deadline=$(( $(date +%s) + 10 ))
    until munge_works; do
        [ "$(date +%s)" -lt "$deadline" ] || { show_logs; die "munged did not come up"; }
        sleep 0.2
    done
    # Remember that we started it, so stop only kills what we started.
    pid="$(pid_from /run/munge/munged.pid munged)" || die "munged runs but has no pid file"
    echo "$pid" >"$STATE/run/munged.pid"
}

node_state() {
    timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n 1
}

cmd_start() {
    local t0 deadline st ctl_ok d_ok
    need_root
    installed || die "SLURM packages not installed (run: $0 install)"
    t0="$(date +%s.%N)"
    write_conf
    start_munged

    if ! pid_from "$STATE/run/slurmctld.pid" slurmctld >/dev/null; then
        # -c: forget jobs and node state of an earlier run; -i: ignore state-file errors.
        # Start from a clean state directory for the same reason. The stale pid file goes
        # too, so the wait below can tell "not written yet" from "died".
        rm -rf "${STATE:?}/state" && mkdir -p "$STATE/state"
        rm -f "$STATE/run/slurmctld.pid"
        slurmctld -f "$CONF" -i -c || { show_logs; die "slurmctld failed to start"; }
    fi
    if ! pid_from "$STATE/run/slurmd.pid" slurmd >/dev/null; then
        # Jobs left over from a slurmd that died are unknown to the new one: remove them.
        kill_stepds
        rm -f "$STATE/run/slurmd.pid"
        slurmd -f "$CONF" || { show_logs; die "slurmd failed to start"; }
    fi

    # Both daemonize at once; the node is usable once the controller lists it as idle
    # (or busy, when start is called again on a cluster that is running jobs).
    # Our own daemons must be alive too: if one died (e.g. its port is taken by another
    # SLURM on this machine), sinfo may get its answer from that other controller.
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    while :; do
        ctl_ok=0; d_ok=0
        pid_from "$STATE/run/slurmctld.pid" slurmctld >/dev/null && ctl_ok=1
        pid_from "$STATE/run/slurmd.pid" slurmd >/dev/null && d_ok=1
        # A pid file whose process is gone: the daemon died, which will not fix itself.
        if [ "$ctl_ok" = 0 ] && [ -s "$STATE/run/slurmctld.pid" ]; then
            show_logs; die "slurmctld exited during start (log: $STATE/log/slurmctld.log)"
        fi
        if [ "$d_ok" = 0 ] && [ -s "$STATE/run/slurmd.pid" ]; then
            show_logs; die "slurmd exited during start (log: $STATE/log/slurmd.log)"
        fi
        st=""
        if [ "$ctl_ok" = 1 ] && [ "$d_ok" = 1 ]; then
            st="$(node_state || true)"
            case "$st" in
                idle|mixed|allocated|completing) break ;;
            esac
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            [ "$ctl_ok" = 1 ] || log "slurmctld is not running"
            [ "$d_ok" = 1 ] || log "slurmd is not running"
            log "node state after ${START_TIMEOUT} s: '${st:-no answer}'"
            show_logs
            die "SLURM did not become ready within ${START_TIMEOUT} s"
        fi
        sleep 0.2
    done
    log "ready: node $(hostname -s) $st, partition $PARTITION, $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s"
    echo "export SLURM_CONF=$CONF"
}

# --- stop -----------------------------------------------------------------------------

cmd_stop() {
    local pid deadline ids
    need_root
    if pid="$(pid_from "$STATE/run/slurmctld.pid" slurmctld)"; then
        # Cancel jobs first, while slurmd is still there to kill their processes:
        # killing slurmstepd instead would orphan the job's processes.
        ids="$(timeout 5 squeue -h -o %A 2>/dev/null || true)"
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086  # one argument per job id
            timeout 5 scancel $ids 2>/dev/null || true
            deadline=$(( $(date +%s) + 15 ))  # KillWait=5 plus margin
            while [ -n "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ] \
                && [ "$(date +%s)" -lt "$deadline" ]; do
                sleep 0.2
            done
        fi
    fi

    if pid="$(pid_from "$STATE/run/slurmd.pid" slurmd)"; then stop_pid "$pid" 5; fi
    if pid="$(pid_from "$STATE/run/slurmctld.pid" slurmctld)"; then stop_pid "$pid" 5; fi

    kill_stepds

    # munged only if we started it (a system munged may serve other users).
    if pid="$(pid_from "$STATE/run/munged.pid" munged)"; then stop_pid "$pid" 5; fi
    rm -f "$STATE/run/munged.pid" "$STATE/run/slurmd.pid" "$STATE/run/slurmctld.pid"

    # Dead daemons stay in the process table as zombies until PID 1 reaps them (~1 s
    # here). Wait a little, so that "ps" right after stop really shows nothing.
    deadline=$(( $(date +%s) + 5 ))
    for pid in "${SIGNALLED[@]}"; do
        while [ -e "/proc/$pid" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    done
    log "stopped"
}

# --- status / conf --------------------------------------------------------------------

cmd_status() {
    pid_from "$STATE/run/slurmctld.pid" slurmctld >/dev/null || { log "slurmctld not running"; return 1; }
    pid_from "$STATE/run/slurmd.pid" slurmd >/dev/null || { log "slurmd not running"; return 1; }
    timeout 5 sinfo || { log "sinfo failed"; return 1; }
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $0 {install|start|stop|status|conf}" >&2; exit 2 ;;
esac
