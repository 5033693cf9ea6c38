#!/usr/bin/env bash
# Benchmark of the fleet copy over RELP/TLS (real rsyslogds on private
# configs and ports, certificates made with openssl): records/s from an
# appliance's audit log to the collector's file with one and with three
# appliances, as a ratio to the rate the daemon alone appends the same load
# in the same run; and the time from an event's acknowledgement to its line
# in the collector's file (p50/p99) at a paced load.
#
# Usage: benches/fleet.sh
# Environment:
#   NXAUDIT_BENCH_EVENTS  events per appliance in the throughput runs
#                         (default 40000)
# Needs rsyslog, rsyslog-relp and openssl (scripts/test installs them).

set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (release)" >&2
cargo test --release --quiet --test it --no-run 2>&1 | grep -v '^ *Executable' >&2 || true
cargo test --release --quiet --test it -- --ignored --exact fleet::bench_fleet --nocapture \
    | grep '^BENCH '
