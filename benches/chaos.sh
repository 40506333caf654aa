#!/usr/bin/env bash
# The chaos matrix in one command: builds with the bench profile and runs benches/chaos.rs, every
# fault on one, two and all but one of three upstreams behind fault-injecting proxies, under a
# paced load, without hedged reads and (when the build accepts `[retry] hedge = true`) with them.
# Extra arguments go to the benchmark, e.g.
#   benches/chaos.sh --rate 200 --fault-secs 5 --upstreams 5 --hedge off --faults partition,reset
# The report is printed and written to target/chaos-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --locked --bench chaos -- "$@"
