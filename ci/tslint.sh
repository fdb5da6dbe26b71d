#!/usr/bin/env bash
# Lint and type-check the JupyterLab extension (labextension/): prettier + eslint
# (`jlpm run lint:check`), then `tsc --noEmit` (`jlpm run typecheck`).
# jlpm comes from $JLPM, else from the project venv (.venv/bin/jlpm, made by scripts/setup.sh).
# Installs the node packages (from yarn.lock) only when node_modules is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JLPM="${JLPM:-$ROOT/.venv/bin/jlpm}"
if [[ "$JLPM" == */* ]]; then
    [ -x "$JLPM" ] || { echo "tslint.sh: no jlpm at $JLPM (run scripts/setup.sh or set JLPM)" >&2; exit 2; }
    JLPM="$(cd "$(dirname "$JLPM")" && pwd)/$(basename "$JLPM")"
    # The package.json scripts call `jlpm` themselves.
    export PATH="$(dirname "$JLPM"):$PATH"
else
    command -v "$JLPM" >/dev/null || { echo "tslint.sh: $JLPM is not on PATH" >&2; exit 2; }
fi
cd "$ROOT/labextension"
if [ ! -d node_modules ]; then
    "$JLPM" install </dev/null
fi
"$JLPM" run lint:check </dev/null
"$JLPM" run typecheck </dev/null
echo "tslint.sh: lint:check and typecheck passed"
