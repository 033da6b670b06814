#!/usr/bin/env bash
# Install asyncpbx into ./.venv and start the PBX with demo users (printed on start-up).
# Extra arguments go to `asyncpbx serve`, e.g. ./run.sh --config asyncpbx.toml
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/asyncpbx serve --demo "$@"
