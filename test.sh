#!/usr/bin/env bash
# Install what the tests need (Python packages into ./.venv; SIPp, baresip, sipsak, tshark, sox,
# stunnel4 via apt-get) and run the whole test suite twice: once on the compiled Cython kernels,
# once on their pure-Python references (ASYNCPBX_NO_EXTENSIONS=1, DESIGN.md principle 6).
# The reference pass runs what exercises the kernels and the compiled modules (media, sipcore,
# security, and the interop tests that carry audio and DTMF through them), not every feature
# and interop test twice. Extra arguments go to pytest, in both passes.
# ASYNCPBX_TEST_REFERENCES=0 skips the second run.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-test-peers.sh
scripts/bootstrap.sh test

# The interop tests give the PBX fixed RTP port ranges inside 40000-49999 and hand the peers
# ports the OS picks (bind port 0). Keep the kernel from picking ephemeral ports in that range,
# so a peer's port can never be taken by the PBX's media allocator in between (root only;
# harmless to skip otherwise).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q "40000-49999" "$reserved"; then
  current=$(cat "$reserved")
  echo "${current:+$current,}40000-49999" > "$reserved" 2>/dev/null || true
fi

run_pytest() {  # run_pytest LABEL ARGS... — pytest's "no tests collected" (5) is a failure
  local label=$1; shift
  echo "== $label"
  set +e
  .venv/bin/python -m pytest "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests ($label): that is a failure, not a pass" >&2
    return 1
  fi
  return $rc
}

REFERENCE_TESTS=(tests/media tests/sipcore tests/security tests/interop/test_calls_sipp.py
                 tests/interop/test_calls_media2.py tests/interop/test_calls_dtmf.py)

# Two pytest-xdist workers (one per core of the CI machine), a test file per worker at a time
# (--dist loadfile: a file's tests share its fixtures and port ranges): the interop tests mostly
# wait on peers and timers, so the compiled pass takes half as long. The workers guess peer
# ports from separate slices (tests/interop/harness.py); ASYNCPBX_TEST_WORKERS=1 runs serially.
workers=${ASYNCPBX_TEST_WORKERS:-2}
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi

run_pytest "tests on the compiled extensions" "${parallel[@]}" "$@"
if [ "${ASYNCPBX_TEST_REFERENCES:-1}" != 0 ]; then
  paths=0
  for a in "$@"; do case "$a" in -*) ;; *) paths=1 ;; esac; done
  # options only (e.g. -x): the reference selection with those options
  if [ $paths -eq 0 ]; then set -- "$@" "${REFERENCE_TESTS[@]}"; fi
  ASYNCPBX_NO_EXTENSIONS=1 run_pytest "tests on the pure-Python references (ASYNCPBX_NO_EXTENSIONS=1)" \
    "${parallel[@]}" "$@"
fi
