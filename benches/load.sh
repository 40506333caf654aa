#!/usr/bin/env bash
# The load benchmark in one command: installs nginx when missing (Debian/Ubuntu; scripts/deps
# installs redis-server, which the access phase starts on a loopback port), raises the
# descriptor limit as far as the machine allows, builds with the bench profile and runs
# benches/load.rs: direct vs nginx vs livechain over HTTP at 64, 1,000 and 10,000 connections,
# then the response-cache phase (--no-cache skips it, --only-cache runs it alone), the access
# phase (livechain without and with API keys and limits in memory and in Redis; --no-access
# skips it, --only-access runs it alone) and the WebSocket scale run. Extra arguments go to the
# benchmark, e.g.
#   benches/load.sh --duration 5 --levels 64,1000 --ws-idle 2000
# The report is printed and written to target/load-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "descriptor limit: $(ulimit -n)"
exec cargo bench --locked --bench load -- "$@"
