#!/usr/bin/env bash
# Start / stop a REAL dask-gateway-server on loopback for the tests.
#
#   ci/gateway.sh start    start (idempotent), wait until healthy, write and print <state>/env.sh
#   ci/gateway.sh stop     stop the server, its clusters and any leftover scheduler/worker
#   ci/gateway.sh status   exit 0 if the server answers /api/health through the proxy
#
# Environment (all optional):
#   GATEWAY_STATE_DIR   state directory           (default <repo>/.ci-state/gateway)
#   GATEWAY_PORT        private API server port   (default 18000)
#   GATEWAY_PROXY_PORT  proxy port, for clients   (default 18001)
#   GATEWAY_PASSWORD    password for any user     (default pipejupyter-test)
#   GATEWAY_LOG_LEVEL   server log level          (default INFO)
#   GATEWAY_MAX_WORKERS cluster_max_workers       (default 4)
#   GATEWAY_START_TIMEOUT seconds to wait for health (default 30)
#   PYTHON              python of the venv to run (default <repo>/.venv/bin/python)
#
# Files in the state directory: gateway.pid, gateway.log, env.sh, clusters/<name>/ (cluster
# working directories with logs/scheduler.log, logs/worker-*.log; removed when a cluster
# stops).
#
# Then, in a shell:   ci/gateway.sh start && . .ci-state/gateway/env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

STATE="${GATEWAY_STATE_DIR:-$repo/.ci-state/gateway}"
PORT="${GATEWAY_PORT:-18000}"
PROXY_PORT="${GATEWAY_PROXY_PORT:-18001}"
PASSWORD="${GATEWAY_PASSWORD:-pipejupyter-test}"
PY="${PYTHON:-$repo/.venv/bin/python}"
START_TIMEOUT="${GATEWAY_START_TIMEOUT:-30}"

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
PIDFILE="$STATE/gateway.pid"
LOG="$STATE/gateway.log"
ENVFILE="$STATE/env.sh"
ADDRESS="http://127.0.0.1:$PROXY_PORT"
# Every process of this gateway (server, proxy, schedulers, workers) carries this
# variable in its environment; `stop` sweeps /proc for it.
MARKER="PIPEJUPYTER_GATEWAY_STATE=$STATE"

log() { echo "gateway.sh: $*" >&2; }

healthy() {
    curl -fsS --max-time 3 -o /dev/null "$ADDRESS/api/health" 2>/dev/null
}

server_pid() {
    # The pid from the pid file, if that process is alive and is a dask-gateway-server.
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    grep -qa dask_gateway_server "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

marked_pids() {
    # Pids of processes whose environment holds $MARKER exactly (grep -z: NUL-separated).
    local f
    grep -lzxF -- "$MARKER" /proc/[0-9]*/environ 2>/dev/null | while read -r f; do
        f="${f#/proc/}"
        echo "${f%/environ}"
    done || true
}

wait_gone() {
    # wait_gone SECONDS PID...: wait until none of the pids is alive; 0 if they all went.
    local deadline=$((SECONDS + $1)) p alive
    shift
    while :; do
        alive=()
        for p in "$@"; do
            if kill -0 "$p" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then
                alive+=("$p")
            fi
        done
        ((${#alive[@]} == 0)) && return 0
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

describe() {
    local p
    for p in "$@"; do
        echo "  $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160)" >&2
    done
}

write_env() {
    (
        umask 077
        printf 'export PIPEJUPYTER_TEST_GATEWAY_ADDRESS=%q PIPEJUPYTER_TEST_GATEWAY_PASSWORD=%q\n' \
            "$ADDRESS" "$PASSWORD" >"$ENVFILE"
    )
    cat "$ENVFILE"
}

cmd_status() {
    local pid
    if pid="$(server_pid)" && healthy; then
        log "healthy: pid $pid, $ADDRESS"
        return 0
    fi
    if healthy; then
        log "something answers $ADDRESS/api/health but not the server of $STATE"
    else
        log "not running ($ADDRESS)"
    fi
    return 1
}

cmd_stop() {
    local pid strays rc=0
    if pid="$(server_pid)"; then
        log "stopping server pid $pid (SIGTERM; it stops its clusters first)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone 40 "$pid"; then
            log "server $pid still alive after 40 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone 5 "$pid" || { log "server $pid would not die"; rc=1; }
        fi
    else
        log "server not running"
    fi
    rm -f "$PIDFILE"

    # Anything left of this gateway: proxy, schedulers, workers (e.g. after a SIGKILL).
    mapfile -t strays < <(marked_pids)
    if ((${#strays[@]})); then
        log "killing ${#strays[@]} leftover process(es):"
        describe "${strays[@]}"
        kill -TERM "${strays[@]}" 2>/dev/null || true
        if ! wait_gone 10 "${strays[@]}"; then
            kill -KILL "${strays[@]}" 2>/dev/null || true
            wait_gone 5 "${strays[@]}" || { log "leftover processes would not die"; rc=1; }
        fi
    fi
    # Working directories of clusters the server could not stop itself.
    if ((rc == 0)) && [[ -d "$STATE/clusters" ]]; then
        find "$STATE/clusters" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
    return $rc
}

cmd_start() {
    local pid t0 deadline
    if pid="$(server_pid)"; then
        if healthy; then
            log "already running: pid $pid"
            write_env
            return 0
        fi
        log "server pid $pid alive but unhealthy: restarting it"
    fi
    # Stale pid file, half-dead server or orphans of an earlier run.
    cmd_stop 2>/dev/null || true

    local port
    for port in "$PORT" "$PROXY_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "127.0.0.1:$port is already in use by something else (not the server of $STATE); set GATEWAY_PORT/GATEWAY_PROXY_PORT"
            ss -ltnp "sport = :$port" >&2 2>/dev/null || true
            return 1
        fi
    done
    [[ -x "$PY" ]] || { log "no python at $PY (set PYTHON)"; return 1; }

    mkdir -p "$STATE/clusters"
    : >"$LOG"
    t0="$(date +%s%N)"
    # setsid: own session, so the caller's Ctrl-C / job teardown does not hit it; the
    # subshell is not a process-group leader, so setsid execs without forking and $! is
    # the server's pid.
    (
        cd "$STATE"
        exec env "$MARKER" GATEWAY_STATE_DIR="$STATE" GATEWAY_PORT="$PORT" \
            GATEWAY_PROXY_PORT="$PROXY_PORT" GATEWAY_PASSWORD="$PASSWORD" \
            setsid "$PY" -m dask_gateway_server -f "$here/gateway_config.py" \
            </dev/null >>"$LOG" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"

    deadline=$((SECONDS + START_TIMEOUT))
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "server exited during startup; last lines of $LOG:"
            tail -n 30 "$LOG" >&2
            cmd_stop 2>/dev/null || true
            return 1
        fi
        if grep -q "address already in use" "$LOG"; then
            log "a port is taken; last lines of $LOG:"
            tail -n 30 "$LOG" >&2
            cmd_stop || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "not healthy after ${START_TIMEOUT}s; last lines of $LOG:"
            tail -n 30 "$LOG" >&2
            cmd_stop || true
            return 1
        fi
        sleep 0.1
    done
    log "healthy after $((($(date +%s%N) - t0) / 1000000)) ms: pid $pid, $ADDRESS (log $LOG)"
    write_env
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
