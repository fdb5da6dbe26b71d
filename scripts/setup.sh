#!/usr/bin/env bash
# Set up pipejupyter on a fresh Debian machine (Python 3.10+, Node 18+).
#
#   scripts/setup.sh          the Python environment (.venv) with every backend and JupyterLab
#   scripts/setup.sh --test   also, as root, the Debian packages the tests need (SLURM, munge,
#                             OpenMPI, Chromium), mpi4py built for that OpenMPI, casatasks
#                             with offline measures data, and JupyterHub + batchspawner with
#                             a test user's lab venv (ci/hub.sh install)
#
# Idempotent: a second run only checks. Never asks questions (CI has no standard input).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-}

say() { printf '==> %s\n' "$*" >&2; }

python3 - <<'PY' || { echo "pipejupyter needs Python 3.10 or newer (python3 is $(python3 --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || echo 0)
if [ "${node_major:-0}" -lt 18 ]; then
    echo "pipejupyter's JupyterLab extension is built with Node 18 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi

if [ "$MODE" = "--test" ]; then
    if [ "$(id -u)" = 0 ]; then
        say "Debian packages for the tests"
        ci/system.sh install
        ci/slurm.sh install
    else
        say "not root: skipping Debian packages (tests needing SLURM, OpenMPI or Chromium will skip)"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip >/dev/null
EXTRAS="all"
[ "$MODE" = "--test" ] && EXTRAS="all,test"
say "installing pipejupyter[$EXTRAS] (editable; builds the JupyterLab extension)"
$PY -m pip install -q -e ".[$EXTRAS]"

if [ "$MODE" = "--test" ]; then
    if command -v mpirun >/dev/null; then
        say "mpi4py for the system OpenMPI"
        PYTHON=$ROOT/$PY ci/mpi.sh install
    fi
    if [ "$(id -u)" = 0 ]; then
        say "JupyterHub with batchspawner, configurable-http-proxy and the test user's lab venv"
        PYTHON=$ROOT/$PY ci/hub.sh install
    fi
    say "casatasks with offline measures data"
    PYTHON=$ROOT/$PY ci/casa.sh install
fi
say "set-up done"
