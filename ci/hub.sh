#!/usr/bin/env bash
# ci/hub.sh - a real JupyterHub that spawns each user's JupyterLab as a SLURM job, for tests.
#
# Usage:
#   ci/hub.sh install   (root) the test user, the hub's venv (jupyterhub + batchspawner),
#                       configurable-http-proxy (npm) and the user's venv (JupyterLab,
#                       jupyter-server-proxy, dask-labextension, pipejupyter); idempotent
#   ci/hub.sh start     start the hub on 127.0.0.1 (SLURM must be running: ci/slurm.sh start);
#                       writes <state>/env.sh with the PIPEJUPYTER_TEST_HUB_* variables
#   ci/hub.sh stop      stop the user's server, cancel the test user's jobs, stop hub and proxy
#   ci/hub.sh status    exit 0 if the hub answers /hub/api through its proxy
#   ci/hub.sh env       print the path of env.sh (the state directory depends on permissions)
#
# Environment (all optional):
#   HUB_STATE_DIR       state (venvs, database, logs, env.sh); default <repo>/.ci-state/hub.
#                       The test user must be able to read the user venv and the SLURM config
#                       copy in it: when <repo> is not readable by that user, the default is
#                       /var/tmp/pipejupyter-hub.
#   HUB_PORT            the hub's public port, the only one a browser uses   (default 18100)
#   HUB_PROXY_API_PORT  configurable-http-proxy's API port                   (default 18101)
#   HUB_INTERNAL_PORT   the hub's own port behind the proxy                  (default 18102)
#   HUB_USER            the Linux user whose lab is spawned                  (default alice)
#   HUB_PASSWORD        DummyAuthenticator's password                        (default pipejupyter-hub)
#   HUB_START_TIMEOUT   seconds to wait for the hub                          (default 60)
#
# Versions checked together on Debian 12 (../shared/RECIPES.md): jupyterhub 6.1.1,
# batchspawner 1.3.0, configurable-http-proxy 5.3.0, jupyter-server-proxy 4.6,
# dask-labextension 7.0. The user venv is made from /usr/bin/python3: a venv of a python
# under /root (mode 700) cannot be executed by the job's user.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

HUB_USER="${HUB_USER:-alice}"
PORT="${HUB_PORT:-18100}"
PROXY_API_PORT="${HUB_PROXY_API_PORT:-18101}"
INTERNAL_PORT="${HUB_INTERNAL_PORT:-18102}"
PASSWORD="${HUB_PASSWORD:-pipejupyter-hub}"
START_TIMEOUT="${HUB_START_TIMEOUT:-60}"
JUPYTERHUB_VERSION=6.1.1
BATCHSPAWNER_VERSION=1.3.0
CHP_VERSION=5.3.0
USER_PACKAGES=(
    "jupyterhub==$JUPYTERHUB_VERSION" "batchspawner==$BATCHSPAWNER_VERSION"
    "jupyter-server-proxy>=4.1,<5" "dask-labextension>=7,<8"
)
ADDRESS="http://127.0.0.1:$PORT"

log() { echo "hub.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Can the test user read $1? (false when the user does not exist yet)
user_reads() {
    id "$HUB_USER" >/dev/null 2>&1 && runuser -u "$HUB_USER" -- test -r "$1" 2>/dev/null
}

# Whether any user may read the repository decides where the state goes ("nobody" stands
# for the test user, which may not exist yet), so that the choice never changes.
if [ -n "${HUB_STATE_DIR:-}" ]; then
    STATE="$HUB_STATE_DIR"
elif runuser -u nobody -- test -r "$repo/pyproject.toml" 2>/dev/null; then
    STATE="$repo/.ci-state/hub"
else
    STATE=/var/tmp/pipejupyter-hub
fi
HUB_VENV="$STATE/hub-venv"
USER_VENV="$STATE/user-venv"
CHP="$STATE/proxy/node_modules/.bin/configurable-http-proxy"
PIDFILE="$STATE/hub.pid"
LOG="$STATE/hub.log"
ENVFILE="$STATE/env.sh"
# The hub and its proxy carry this in their environment; stop sweeps /proc for it.
MARKER="PIPEJUPYTER_HUB_STATE=$STATE"

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it creates a user and runs jobs as that user)"; }

# pip, without the noise of the index warnings this machine's pip configuration prints.
quiet_pip() {
    local py="$1" out rc=0
    shift
    out="$(mktemp)"
    "$py" -m pip install -q --disable-pip-version-check "$@" >"$out" 2>&1 || rc=$?
    grep -v "is ignored: it is neither" "$out" >&2 || true
    rm -f "$out"
    return "$rc"
}

# --- install ----------------------------------------------------------------------

install_user() {
    if ! id "$HUB_USER" >/dev/null 2>&1; then
        log "creating user $HUB_USER"
        useradd -m -s /bin/bash "$HUB_USER"
    fi
    # The lab writes its logs and runtime files into the home directory.
    install -d -o "$HUB_USER" -g "$HUB_USER" -m 0755 "$(getent passwd "$HUB_USER" | cut -d: -f6)"
}

install_hub_venv() {
    if "$HUB_VENV/bin/python" -c "import jupyterhub, batchspawner; assert jupyterhub.__version__ == '$JUPYTERHUB_VERSION'" 2>/dev/null; then
        return 0
    fi
    log "hub venv: jupyterhub $JUPYTERHUB_VERSION, batchspawner $BATCHSPAWNER_VERSION"
    "${PYTHON:-python3}" -m venv "$HUB_VENV"
    quiet_pip "$HUB_VENV/bin/python" "jupyterhub==$JUPYTERHUB_VERSION" "batchspawner==$BATCHSPAWNER_VERSION"
}

install_proxy() {
    [ -x "$CHP" ] && return 0
    log "configurable-http-proxy $CHP_VERSION (npm)"
    mkdir -p "$STATE/proxy"
    (cd "$STATE/proxy" && npm install --no-save --no-audit --no-fund --silent "configurable-http-proxy@$CHP_VERSION")
    [ -x "$CHP" ] || die "configurable-http-proxy missing after npm install"
}

# The labextension the user venv serves is a copy made at install time: reinstall
# pipejupyter when the repository's build differs from it.
pipejupyter_current() {
    local built="$repo/pipejupyter/labextension/package.json"
    local installed="$USER_VENV/share/jupyter/labextensions/pipejupyter/package.json"
    "$USER_VENV/bin/python" -c "import pipejupyter.server" 2>/dev/null || return 1
    [ -f "$installed" ] && cmp -s "$built" "$installed"
}

# /usr/bin/python3's venv module needs Debian's python3-venv (ensurepip).
install_system_venv() {
    /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null && return 0
    log "python3-venv (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends python3-venv >/dev/null
}

install_user_venv() {
    if [ ! -x "$USER_VENV/bin/python" ]; then
        install_system_venv
        log "user venv (from /usr/bin/python3, readable by $HUB_USER)"
        /usr/bin/python3 -m venv "$USER_VENV"
        quiet_pip "$USER_VENV/bin/python" --upgrade pip
    fi
    # Editable when the job's user can read the repository (the lab then runs its code as
    # it is), else a copy.
    local source=("$repo[lab,slurm]")
    user_reads "$repo/pyproject.toml" && source=(-e "$repo[lab,slurm]")
    if ! "$USER_VENV/bin/python" -c "import jupyterhub, batchspawner, jupyter_server_proxy, dask_labextension, dask_jobqueue, jupyterlab" 2>/dev/null; then
        log "user venv: ${USER_PACKAGES[*]}, pipejupyter[lab,slurm]"
        quiet_pip "$USER_VENV/bin/python" "${USER_PACKAGES[@]}" "${source[@]}"
    fi
    if ! pipejupyter_current; then
        log "user venv: pipejupyter from $repo"
        if user_reads "$repo/pyproject.toml"; then
            quiet_pip "$USER_VENV/bin/python" --no-deps -e "$repo"
        else  # the job's user could not import an editable install from here
            quiet_pip "$USER_VENV/bin/python" --no-deps --force-reinstall "$repo"
        fi
    fi
    # No news toast over the tests' clicks; window.jupyterapp for commands from tests.
    mkdir -p "$USER_VENV/etc/jupyter/labconfig"
    printf '%s\n' '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}, "exposeAppInBrowser": true}' \
        >"$USER_VENV/etc/jupyter/labconfig/page_config.json"
    # A config dir that turns pipejupyter's server extension off (spawn option pipejupyter=off).
    mkdir -p "$STATE/no-pipejupyter"
    printf '%s\n' '{"ServerApp": {"jpserver_extensions": {"pipejupyter": false}}}' \
        >"$STATE/no-pipejupyter/jupyter_server_config.json"
}

cmd_install() {
    need_root
    if ! command -v npm >/dev/null; then
        log "npm (apt), for configurable-http-proxy"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends npm >/dev/null
    fi
    command -v npm >/dev/null || die "npm is needed for configurable-http-proxy"
    install_user
    mkdir -p "$STATE"
    chmod 0755 "$STATE"
    install_hub_venv
    install_proxy
    install_user_venv
    log "installed under $STATE"
}

# --- start / stop -----------------------------------------------------------------

healthy() {
    curl -fsS --max-time 3 -o /dev/null "$ADDRESS/hub/api/" 2>/dev/null
}

hub_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [ -n "$pid" ] && grep -qa jupyterhub "/proc/$pid/cmdline" 2>/dev/null || return 1
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
    echo "$pid"
}

marked_pids() {
    local f
    grep -lzxF -- "$MARKER" /proc/[0-9]*/environ 2>/dev/null | while read -r f; do
        f="${f#/proc/}"
        echo "${f%/environ}"
    done || true
}

wait_gone() {
    local deadline=$((SECONDS + $1)) p left
    shift
    while :; do
        left=0
        for p in "$@"; do
            if kill -0 "$p" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then
                left=1
            fi
        done
        [ "$left" = 0 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

slurm_conf_source() {
    local conf="${SLURM_CONF:-}"
    if [ -z "$conf" ] && [ -f "$repo/.ci-state/slurm/env.sh" ]; then
        conf="$(sed -n 's/^export SLURM_CONF=//p' "$repo/.ci-state/slurm/env.sh")"
    fi
    [ -n "$conf" ] || conf=/etc/slurm/slurm.conf
    echo "$conf"
}

# The job runs as the test user, whose SLURM clients (the lab's nested sbatch) must read
# the cluster's config: ci/slurm.sh keeps its own file readable by root only.
copy_slurm_conf() {
    local src
    src="$(slurm_conf_source)"
    [ -r "$src" ] || die "no SLURM config at $src (run: ci/slurm.sh start)"
    install -m 0644 "$src" "$STATE/slurm.conf"
}

api_token() {
    [ -s "$STATE/api_token" ] \
        || (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/api_token")
    cat "$STATE/api_token"
}

write_env() {
    (
        umask 077
        printf 'export PIPEJUPYTER_TEST_HUB_URL=%q PIPEJUPYTER_TEST_HUB_USER=%q PIPEJUPYTER_TEST_HUB_PASSWORD=%q PIPEJUPYTER_TEST_HUB_TOKEN=%q PIPEJUPYTER_TEST_HUB_STATE=%q\n' \
            "$ADDRESS" "$HUB_USER" "$PASSWORD" "$(api_token)" "$STATE" >"$ENVFILE"
    )
    cat "$ENVFILE"
}

cmd_start() {
    local pid t0 deadline port
    need_root
    [ -x "$HUB_VENV/bin/jupyterhub" ] && [ -x "$CHP" ] && [ -x "$USER_VENV/bin/jupyterhub-singleuser" ] \
        || die "not installed (run: $0 install)"
    pipejupyter_current || install_user_venv
    copy_slurm_conf
    if pid="$(hub_pid)" && healthy; then
        log "already running: pid $pid, $ADDRESS"
        write_env
        return 0
    fi
    cmd_stop >/dev/null 2>&1 || true
    for port in "$PORT" "$PROXY_API_PORT" "$INTERNAL_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "127.0.0.1:$port is in use by something else; set HUB_PORT/HUB_PROXY_API_PORT/HUB_INTERNAL_PORT"
        fi
    done

    SLURM_CONF="$STATE/slurm.conf" timeout 10 sinfo -h -o %a >/dev/null 2>&1 \
        || die "SLURM does not answer (ci/slurm.sh start)"

    : >"$LOG"
    t0="$(date +%s%N)"
    (
        cd "$STATE"
        exec env "$MARKER" SLURM_CONF="$STATE/slurm.conf" HUB_STATE_DIR="$STATE" \
            HUB_USER_VENV="$USER_VENV" HUB_CHP="$CHP" HUB_PORT="$PORT" \
            HUB_PROXY_API_PORT="$PROXY_API_PORT" HUB_INTERNAL_PORT="$INTERNAL_PORT" \
            HUB_USER="$HUB_USER" HUB_PASSWORD="$PASSWORD" HUB_API_TOKEN="$(api_token)" \
            PATH="$HUB_VENV/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
            setsid "$HUB_VENV/bin/jupyterhub" -f "$here/hub_config.py" </dev/null >>"$LOG" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    deadline=$((SECONDS + START_TIMEOUT))
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG" >&2
            cmd_stop >/dev/null 2>&1 || true
            die "the hub exited during start (log: $LOG)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$LOG" >&2
            cmd_stop >/dev/null 2>&1 || true
            die "the hub did not answer within ${START_TIMEOUT} s (log: $LOG)"
        fi
        sleep 0.2
    done
    log "ready after $((($(date +%s%N) - t0) / 1000000)) ms: pid $pid, $ADDRESS (log $LOG)"
    write_env
}

cmd_stop() {
    local pid strays deadline rc=0
    need_root
    if healthy && [ -s "$STATE/api_token" ]; then
        # The hub cancels the lab's job; the lab stops its clusters on the way out.
        curl -fsS --max-time 30 -X DELETE -H "Authorization: token $(cat "$STATE/api_token")" \
            "$ADDRESS/hub/api/users/$HUB_USER/server" >/dev/null 2>&1 || true
    fi
    # Whatever the test user still has queued (labs, worker jobs of a killed lab).
    if id "$HUB_USER" >/dev/null 2>&1 && command -v squeue >/dev/null; then
        export SLURM_CONF="${SLURM_CONF:-$(slurm_conf_source)}"
        if [ -n "$(timeout 5 squeue -h -u "$HUB_USER" -o %A 2>/dev/null || true)" ]; then
            timeout 5 scancel -u "$HUB_USER" 2>/dev/null || true
            deadline=$((SECONDS + 15))
            while [ -n "$(timeout 5 squeue -h -u "$HUB_USER" -o %A 2>/dev/null || true)" ] \
                && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.2
            done
        fi
    fi
    if pid="$(hub_pid)"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone 20 "$pid" || { kill -KILL "$pid" 2>/dev/null || true; wait_gone 5 "$pid" || rc=1; }
    fi
    rm -f "$PIDFILE"
    mapfile -t strays < <(marked_pids)
    if ((${#strays[@]})); then
        kill -TERM "${strays[@]}" 2>/dev/null || true
        wait_gone 10 "${strays[@]}" || { kill -KILL "${strays[@]}" 2>/dev/null || true; wait_gone 5 "${strays[@]}" || rc=1; }
    fi
    log "stopped"
    return $rc
}

cmd_status() {
    local pid
    if pid="$(hub_pid)" && healthy; then
        log "running: pid $pid, $ADDRESS"
        return 0
    fi
    log "not running ($ADDRESS)"
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "$ENVFILE" ;;
    *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac
