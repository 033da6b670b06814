#!/usr/bin/env bash
# The real peers the interop tests drive: SIPp (sip-tester), baresip, sipsak, tshark, sox, and
# stunnel4 (Debian's SIPp is built without OpenSSL, so SIPp reaches our TLS port through stunnel).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
pkgs=(sip-tester baresip sipsak tshark sox stunnel4)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  $SUDO apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
