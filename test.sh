#!/usr/bin/env bash
# Set up everything the tests need and run every test: ./test.sh [pytest arguments]
#
# Installs (as root) SLURM, munge, OpenMPI, Chromium; creates .venv with every extra;
# installs casatasks and measures data; starts a real single-node SLURM and a real
# dask-gateway-server on loopback and a JupyterHub that spawns labs as SLURM jobs (ci/hub.sh);
# runs ruff (lint and format), lint-imports (the layers), the TypeScript lint, and pytest;
# stops the services again.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test

services_down() {
    ci/gateway.sh stop >/dev/null 2>&1 || true
    # The hub before SLURM: stopping it cancels the test user's lab and worker jobs.
    [ "$(id -u)" = 0 ] && ci/hub.sh stop >/dev/null 2>&1 || true
    ci/slurm.sh stop >/dev/null 2>&1 || true
}
trap services_down EXIT

if [ "$(id -u)" = 0 ]; then
    ci/slurm.sh start >/dev/null
    # shellcheck disable=SC1091
    . .ci-state/slurm/env.sh
    # JupyterHub spawning the lab as a SLURM job of a test user (ci/hub.sh; needs SLURM).
    # If it does not start, the hub tests say so (in CI: fail); the rest still runs.
    if ci/hub.sh start >/dev/null; then
        # shellcheck disable=SC1091
        . "$(ci/hub.sh env)"
    fi
fi
ci/gateway.sh start >/dev/null
# shellcheck disable=SC1091
. .ci-state/gateway/env.sh
# shellcheck disable=SC1091
[ -f .ci-state/casa/env.sh ] && . .ci-state/casa/env.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
ci/tslint.sh
.venv/bin/python -m pytest "$@"
