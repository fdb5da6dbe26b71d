#!/usr/bin/env bash
# Set up pipejupyter and run the main job: ./lab.sh [jupyter lab arguments]
#
# Creates .venv with every backend and JupyterLab (building the sidebar extension), runs a
# short console demo of the default local profile, then opens JupyterLab on notebooks/.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/pipejupyter demo -n 2
exec .venv/bin/jupyter lab --notebook-dir=notebooks "$@"
