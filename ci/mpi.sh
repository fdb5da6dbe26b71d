#!/usr/bin/env bash
# OpenMPI + mpi4py for the test suite (Debian 12: OpenMPI 4.1.4).
#
# usage: ci/mpi.sh [install|check|env]
#   install  apt-install openmpi-bin + libopenmpi-dev if `mpirun` is missing, pip-install
#            mpi4py into $PYTHON if it cannot be imported, then run `check`.
#   check    `mpirun -n 2 $PYTHON -c 'print(MPI.COMM_WORLD.Get_size())'` must print 2 twice.
#   env      print the export lines that let mpirun run as root without the flag.
#
# env: PYTHON   interpreter to equip (default: <repo root>/.venv/bin/python)
#      MPI4PY_FROM_SOURCE=1  force the source build of mpi4py (see below)
#
# Running as root: mpirun refuses to start unless given --allow-run-as-root or
# OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (these two are safe to keep in the
# environment of Dask workers; they are not part of a rank's identity).
#
# Why the mpi4py wheel is kept: mpi4py >= 4.1 binary wheels on PyPI ship two variants of the
# extension (MPI.openmpi.*.so and MPI.mpich.*.so) and dlopen the system's libmpi at import, so
# the pip wheel (4.1.2, checked) works with Debian's OpenMPI 4.1.4 - `MPI.Get_library_version()`
# reports "Open MPI v4.1.4, package: Debian OpenMPI". If the check below fails with a binary
# wheel (older wheels, or a wheel built against another MPI, give a size-1 COMM_WORLD per rank
# or a dlopen error), mpi4py is rebuilt from source against the system mpicc with
# `pip install --no-binary mpi4py --force-reinstall mpi4py` (needs gcc + libopenmpi-dev +
# Python headers; took 6.5 min here on 2 busy cores, so it is only a fallback).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MPIRUN_FLAGS=(--allow-run-as-root --oversubscribe)

log() { printf '[mpi.sh] %s\n' "$*" >&2; }

apt_install() {
    # Another process may hold the dpkg lock (concurrent set-ups): wait for it, don't fail.
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=900)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@"; then
        log "apt-get install failed; refreshing package lists once"
        apt-get -q -o DPkg::Lock::Timeout=900 update
        DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@"
    fi
}

mpi4py_importable() {
    "$PYTHON" -c 'import mpi4py, mpi4py.MPI' >/dev/null 2>&1
}

check() {
    local out
    out="$(cd /tmp && timeout 120 mpirun "${MPIRUN_FLAGS[@]}" -n 2 "$PYTHON" -c \
        'from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())' 2>&1)" || {
        log "mpirun check failed:"; printf '%s\n' "$out" >&2; return 1; }
    if [ "$(printf '%s\n' "$out" | grep -cx 2)" -ne 2 ]; then
        log "expected '2' twice, got:"; printf '%s\n' "$out" >&2; return 1
    fi
    log "ok: mpirun -n 2 -> COMM_WORLD size 2 on both ranks ($("$PYTHON" -c \
        'from mpi4py import MPI; import mpi4py; print("mpi4py", mpi4py.__version__, "/", MPI.Get_library_version().replace(chr(0), "").splitlines()[0].strip())' 2>/dev/null))"
}

build_mpi4py_from_source() {
    log "building mpi4py from source against $(command -v mpicc)"
    MPICC="$(command -v mpicc)" "$PYTHON" -m pip install -q --no-cache-dir \
        --no-binary mpi4py --force-reinstall mpi4py
}

install() {
    if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
        log "installing OpenMPI (openmpi-bin libopenmpi-dev)"
        apt_install openmpi-bin libopenmpi-dev
    fi
    if [ "${MPI4PY_FROM_SOURCE:-0}" = 1 ]; then
        build_mpi4py_from_source
    elif ! mpi4py_importable; then
        log "pip-installing mpi4py into $PYTHON"
        "$PYTHON" -m pip install -q mpi4py
    fi
    if ! check; then
        log "mpi4py does not work with the system OpenMPI; rebuilding it from source"
        build_mpi4py_from_source
        check
    fi
}

case "${1:-install}" in
    install) install ;;
    check) check ;;
    env) echo "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1" ;;
    *) echo "usage: $0 [install|check|env]" >&2; exit 2 ;;
esac
