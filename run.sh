#!/usr/bin/env bash
# Install asyncpbx into ./.venv and start the PBX with demo users (printed on start-up).
# Extra arguments go to `asyncpbx serve`, e.g. ./run.sh --config asyncpbx.toml
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
# the /phone page's JsSIP (web/, from its package-lock.json), when npm is there
if command -v npm >/dev/null && [ ! -f web/dist/jssip.min.js ]; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build >/dev/null) \
    || echo "JsSIP not installed: /phone will not work" >&2
fi
exec .venv/bin/asyncpbx serve --demo "$@"
