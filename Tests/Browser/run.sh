#!/usr/bin/env bash
# The real-browser test: two headless Chromium processes, each on a different Switchboard
# node of one Redis, chat over a WebRTC data channel that Switchboard set up. Everything runs
# in a private network namespace with only loopback, so nothing leaves the machine.
# Needs: chromium, chromium-driver, iproute2 (apt) and selenium (pip); `make test` installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build --product switchboard >/dev/null
BIN=$(swift build --show-bin-path)
exec unshare --net -- bash -c "ip link set lo up && exec python3 Tests/Browser/two_browsers.py '$BIN'"
