#!/usr/bin/env bash
# Offline casatasks for the test suite.
#
# usage: ci/casa.sh [install|config|check]
#   install  pip-install the pinned casatools/casatasks/casadata/six and casampi into $PYTHON
#            unless the pinned versions are already there, then `config`. Prints the export
#            line.
#   config   (re)write <repo>/.ci-state/casa/config.py and env.sh; print the export line.
#   check    import casatools with that config and make sure the measures data resolve.
#
# Use it:   eval "$(ci/casa.sh install | tail -n 1)"     # or: . .ci-state/casa/env.sh
#
# env: PYTHON             interpreter to equip (default <repo root>/.venv/bin/python)
#      CASA_VERSION       casatools == casatasks version (default 6.7.0.31: the newest
#                         casatools wheel for Python 3.11; casatasks must match it exactly)
#      CASADATA_VERSION   casadata wheel version (default 2025.9.22; empty = newest)
#      CASAMPI_VERSION    casampi version (default 0.6.0)
#      CI_STATE           state dir (default <repo root>/.ci-state)
#
# Facts this relies on:
#  * casatasks imports `six` without declaring it, so it is installed explicitly.
#  * casatasks pulls numpy, scipy, matplotlib, pyerfa, certifi; casatools pulls casaconfig.
#    casaconfig 1.5.2 also installs a stray top-level `tests/` directory (no __init__.py) into
#    site-packages.
#  * Without measures data every task that reads a MeasurementSet fails, and by default
#    casatools tries to download it into ~/.casa/data at import. The `casadata` wheel carries
#    the data (casadata/__data__); the site config below points CASA at it and turns off every
#    update and network check. casaconfig reads the file named by CASASITECONFIG (must be an
#    absolute path to an existing file) and then ~/.casa/config.py, which would override it.
#  * A "leap second table out-of-date" warning at start is expected with frozen data.
#  * casampi (CASA's MPI framework: tclean(parallel=True) under mpirun) pins only mpi4py>=4.0
#    and an unversioned casatools. Run ci/mpi.sh first (scripts/setup.sh does): its mpi4py,
#    working with the system OpenMPI, then satisfies casampi and pip keeps it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
CASA_VERSION="${CASA_VERSION:-6.7.0.31}"
CASADATA_VERSION="${CASADATA_VERSION-2025.9.22}"
CASAMPI_VERSION="${CASAMPI_VERSION:-0.6.0}"
STATE="${CI_STATE:-$ROOT/.ci-state}/casa"
CONFIG="$STATE/config.py"

log() { printf '[casa.sh] %s\n' "$*" >&2; }

installed() {
    # Fast (no casatools import): metadata only.
    "$PYTHON" - "$CASA_VERSION" "$CASADATA_VERSION" "$CASAMPI_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
from importlib.util import find_spec
casa, data, casampi = sys.argv[1], sys.argv[2], sys.argv[3]
assert version("casatools") == casa and version("casatasks") == casa
assert version("casampi") == casampi and find_spec("mpi4py") is not None
assert find_spec("six") is not None and find_spec("casadata") is not None
assert not data or version("casadata") == data
EOF
}

install() {
    if installed; then
        log "casatools/casatasks $CASA_VERSION, casadata, six, casampi $CASAMPI_VERSION" \
            "already installed in $PYTHON"
    else
        local data_req="casadata"
        [ -n "$CASADATA_VERSION" ] && data_req="casadata==$CASADATA_VERSION"
        log "pip-installing casatools==$CASA_VERSION casatasks==$CASA_VERSION $data_req six" \
            "casampi==$CASAMPI_VERSION (~550 MB download, ~1.8 GB installed with dependencies)"
        "$PYTHON" -m pip install -q --disable-pip-version-check \
            "casatools==$CASA_VERSION" "casatasks==$CASA_VERSION" "$data_req" six \
            "casampi==$CASAMPI_VERSION"
        installed || { log "install did not give the pinned versions"; exit 1; }
    fi
    config
}

config() {
    mkdir -p "$STATE"
    local measures
    measures="$("$PYTHON" -c 'import os, importlib.util as u
print(os.path.join(os.path.dirname(u.find_spec("casadata").origin), "__data__"))')"
    [ -d "$measures/geodetic" ] || { log "no measures data under $measures"; exit 1; }
    local tmp="$CONFIG.tmp.$$"
    cat >"$tmp" <<EOF
# CASA site config written by ci/casa.sh: offline, data from the casadata wheel.
# Used through CASASITECONFIG=$CONFIG
measurespath = "$measures"
datapath = [measurespath]
measures_auto_update = False
data_auto_update = False
skipnetworkcheck = True
logfile = "$STATE/casa.log"
cachedir = "$STATE"
nologger = True
nogui = True
agg = True
EOF
    mv -f "$tmp" "$CONFIG"
    printf 'export CASASITECONFIG=%q\n' "$CONFIG" >"$STATE/env.sh.tmp.$$"
    mv -f "$STATE/env.sh.tmp.$$" "$STATE/env.sh"
    cat "$STATE/env.sh"
}

check() {
    [ -f "$CONFIG" ] || config >/dev/null
    (cd "$STATE" && CASASITECONFIG="$CONFIG" "$PYTHON" - <<'EOF'
import os, time
t = time.monotonic()
import casatools, casatasks  # noqa: F401
iers = casatools.ctsys.resolve("geodetic/IERSeop2000")
assert iers != "geodetic/IERSeop2000", "measures data not found"
print(f"[casa.sh] ok: casatools {casatools.version_string()}, import {time.monotonic() - t:.1f} s,"
      f" measures {casatools.ctsys.measurespath()}")
EOF
    )
}

case "${1:-install}" in
    install) install ;;
    config) config ;;
    check) check ;;
    *) echo "usage: $0 [install|config|check]" >&2; exit 2 ;;
esac
