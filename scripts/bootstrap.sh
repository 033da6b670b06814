#!/usr/bin/env bash
# Create .venv and install asyncpbx into it (editable; Cython and mypyc extensions built in place).
#   scripts/bootstrap.sh          runtime dependencies
#   scripts/bootstrap.sh test     plus what the tests need
# On a fresh Debian machine it apt-installs the compiler, venv support and espeak-ng (the prompts'
# voice) first (needs root/sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
apt_install() {  # apt_install PKG... — only what is missing; one `apt-get update` at most
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

_drop_editable_note() {  # filter: drop setuptools' "Editable installation." BuildBackendWarning block
  awk '/BuildBackendWarning: Editable installation\./ {skip=1; next}
       skip && /WheelFile\(wheel_path/ {skip=0; next}
       !skip'
}

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "asyncpbx needs Python >= 3.11"'
if command -v apt-get >/dev/null; then
  command -v cc >/dev/null || apt_install build-essential
  "$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || apt_install python3-dev
  "$PY" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  # the prompts (announcements) are spoken by espeak-ng (pbx.prompts)
  command -v espeak-ng >/dev/null || apt_install espeak-ng
fi

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi

# Fast path: the build inputs (setup.py, pyproject.toml, the mypyc and Cython sources; see
# scripts/build_stamp.py) hash to what the last successful install recorded, for the same extra
# (an install for "test" also serves a plain start), and the package imports with every
# compiled module present and fresh: nothing to rebuild (the install is editable).
stamp_file=.venv/.asyncpbx-build-stamp
wanted="$(.venv/bin/python scripts/build_stamp.py "$extra")"
installed_ok() { .venv/bin/python scripts/build_stamp.py --check 2>/dev/null; }
if [ -f "$stamp_file" ] && { grep -qx "$wanted" "$stamp_file" \
     || { [ -z "$extra" ] && grep -qx "$(.venv/bin/python scripts/build_stamp.py test)" "$stamp_file"; }; } \
   && installed_ok; then
  :  # built and fresh
else
  rm -f "$stamp_file"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel Cython numpy mypy 2>&1 | grep -v -e '^WARNING' -e '^$' || true
  target="."
  [ "$extra" = test ] && target=".[test]"
  echo "building asyncpbx (mypyc + Cython extensions; a minute or two) ..."
  # --no-build-isolation: build against the Cython/numpy/mypy just installed (faster, no second
  # download); mypy brings mypyc, which compiles the modules listed in sipcore/_compiled.py.
  # setuptools' note that an editable install is one is not a problem: dropped.
  .venv/bin/python -m pip install -q --no-build-isolation -e "$target" 2>&1 \
    | grep -v -e '^WARNING' -e '^$' | _drop_editable_note || true
  .venv/bin/python -c 'import pbx, sipcore, media' || { echo "install failed" >&2; exit 1; }
  echo "$wanted" > "$stamp_file"
fi
# the prompt set, generated from pbx/prompts/texts.toml into the default data directory's cache
# (`asyncpbx serve` does the same at start-up for its own data directory; cached, so fast)
.venv/bin/python -m pbx.prompts >/dev/null || echo "warning: some prompts could not be generated" >&2
