#!/usr/bin/env bash
# The real peers the interop tests drive: SIPp (sip-tester), baresip, sipsak, tshark, sox, and
# stunnel4 (Debian's SIPp is built without OpenSSL, so SIPp reaches our TLS port through stunnel),
# chromium (the browser-phone tests drive Debian's browser with Playwright, never a downloaded one)
# and node/npm for JsSIP, which is installed into web/node_modules (git-ignored) from the
# committed web/package-lock.json and bundled to web/dist/jssip.min.js (served at /phone).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
pkgs=(sip-tester baresip sipsak tshark sox stunnel4 chromium)
command -v npm >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  $SUDO apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
web="$(dirname "$0")/../web"
if [ ! -f "$web/dist/jssip.min.js" ] || [ "$web/package-lock.json" -nt "$web/dist/jssip.min.js" ]; then
  echo "installing JsSIP (npm ci in web/)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build >/dev/null)
fi
