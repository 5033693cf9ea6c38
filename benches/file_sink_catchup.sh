#!/usr/bin/env bash
# Catch-up rate of the file sink (`[sinks.file]`): a log set of N records
# is written by the real daemon with the sink off; the sink's checkpoint is
# then set to 0 and the daemon restarted with the sink on, and the time
# until the checkpoint reaches the last seq (every record read through the
# shared follower, parsed, filtered, written and synced) is compared with
# `nxaudit verify` over the same set in the same run (which also reads and
# parses every record, and hashes it). Only the ratio compares across
# machines. Half the records match the sink's filter.
#
# Usage: benches/file_sink_catchup.sh
# Environment:
#   NXAUDIT_BENCH_RECORDS  records to write (default 500000)
#   NXAUDIT_BIN            directory of built binaries (default: build
#                          release into target/release)
#   RUNS                   measured runs of each (default 3)

set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${NXAUDIT_BENCH_RECORDS:-500000}
RUNS=${RUNS:-3}
WORK=$(mktemp -d /tmp/nxaudit-sink-bench.XXXXXX)
DAEMON_PID=
cleanup() {
    [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

if [[ -z "${NXAUDIT_BIN:-}" ]]; then
    echo "== building (release)" >&2
    cargo build --release --quiet --bins
    NXAUDIT_BIN=${CARGO_TARGET_DIR:-target}/release
fi
NXAUDIT=$NXAUDIT_BIN/nxaudit
config() { # $1: sink enabled (true/false)
    cat >"$WORK/nxauditd.toml" <<CONF
[log]
flush = "none"
rotate_size = "16MiB"
compress = "zstd"
max_files = 0
max_total_bytes = 0
min_free_bytes = 0
[journal]
enabled = false
[auth]
source = "off"
[forward]
enabled = false
[sinks.file]
enabled = $1
path = "$WORK/copy.log"
codes = [20101]
group = ""
CONF
}
start() {
    "$NXAUDIT_BIN/nxauditd" --base-dir "$WORK" --config "$WORK/nxauditd.toml" 2>>"$WORK/nxauditd.stderr" &
    DAEMON_PID=$!
    for _ in $(seq 100); do [[ -S $WORK/audit.sock ]] && break; sleep 0.1; done
}
stop() {
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || true
    DAEMON_PID=
}

config false
echo "== writing $RECORDS records through the daemon" >&2
start
awk -v n="$RECORDS" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"code\":%d,\"user\":\"user%d\",\"client\":\"10.0.%d.%d\",\"message\":\"Role name is added to account number %d of the benchmark\"}\n", (i % 2 ? 20101 : 20102), i % 97, i % 251, i % 13, i
}' | "$NXAUDIT" --base-dir "$WORK" --config "$WORK/nxauditd.toml" send >/dev/null
stop
LAST=$(tail -n 1 "$WORK/log/audit.log" | sed 's/.* seq=\([0-9]*\) .*/\1/')
echo "last seq $LAST" >&2

time_verify() {
    local s e
    s=$(date +%s.%N)
    "$NXAUDIT" --base-dir "$WORK" --config "$WORK/nxauditd.toml" verify >/dev/null
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
time_sink() {
    local s e
    rm -f "$WORK/copy.log" "$WORK/copy.log.1"
    mkdir -p "$WORK/state"
    echo 0 >"$WORK/state/file-sink.pos"
    config true
    s=$(date +%s.%N)
    start
    until [[ "$(cat "$WORK/state/file-sink.pos" 2>/dev/null)" -ge "$LAST" ]]; do sleep 0.02; done
    e=$(date +%s.%N)
    stop
    config false
    local copied
    copied=$(wc -l <"$WORK/copy.log")
    echo "copied $copied lines" >&2
    echo "$e - $s" | bc
}
echo "== $RUNS runs each (seconds: sink verify ratio)" >&2
for _ in $(seq "$RUNS"); do
    k=$(time_sink)
    v=$(time_verify)
    echo "$k $v $(echo "scale=2; $k / $v" | bc)"
done
