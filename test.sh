#!/usr/bin/env bash
# Install what the tests need (Python packages into ./.venv; SIPp, baresip, sipsak, tshark via
# apt-get) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-test-peers.sh
scripts/bootstrap.sh test
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
