#!/usr/bin/env bash
# Debian packages the test suite needs besides SLURM (see ci/slurm.sh): OpenMPI for the MPI
# tests and Chromium for the browser tests. As root; skips apt when everything is present.
set -euo pipefail
PACKAGES=(openmpi-bin libopenmpi-dev chromium procps)
case "${1:-install}" in
install)
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    ;;
*) echo "usage: ci/system.sh install" >&2; exit 2 ;;
esac
