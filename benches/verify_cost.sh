#!/usr/bin/env bash
# Cost of `nxaudit verify` (issue 12): on a log set of ~3 million records
# written by the real daemon (flush = "none", rotation every 64 MiB, rotated
# files compressed by the daemon's own zstd), the time of `nxaudit verify`
# against the floor of the same work done by standard tools in the same
# run: decompress every file and SHA-256 all the bytes once
# (`zstdcat … | openssl dgst -sha256`). Only the ratio compares across
# machines; both are timed alternately, warm page cache.
#
# Usage: benches/verify_cost.sh
# Environment:
#   NXAUDIT_BENCH_RECORDS  records to write (default 3000000)
#   NXAUDIT_BENCH_DIR      work directory (default: a new temp dir, removed
#                          at the end; a given one is kept and its log set
#                          reused when it exists)
#   RUNS                   measured runs of each after one warm-up (default 5)
#
# Target: verify <= 1.5x the zstdcat | openssl floor.

set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${NXAUDIT_BENCH_RECORDS:-3000000}
RUNS=${RUNS:-5}
if [[ -n "${NXAUDIT_BENCH_DIR:-}" ]]; then
    WORK=$NXAUDIT_BENCH_DIR
    KEEP=1
else
    WORK=$(mktemp -d /tmp/nxaudit-verify-bench.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORK"
DAEMON_PID=
cleanup() {
    [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [[ $KEEP == 0 ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet --bins
BIN=${CARGO_TARGET_DIR:-target}/release
NXAUDIT=$BIN/nxaudit
CONFIG=$WORK/nxauditd.toml
cat >"$CONFIG" <<'EOF'
[log]
flush = "none"
rotate_size = "64MiB"
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
EOF

if [[ ! -s $WORK/log/audit.log ]]; then
    echo "== writing $RECORDS records through the daemon into $WORK/log" >&2
    "$BIN/nxauditd" --base-dir "$WORK" --config "$CONFIG" 2>"$WORK/nxauditd.stderr" &
    DAEMON_PID=$!
    for _ in $(seq 100); do [[ -S $WORK/audit.sock ]] && break; sleep 0.1; done
    awk -v n="$RECORDS" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "{\"code\":20101,\"user\":\"user%d\",\"client\":\"10.0.%d.%d\",\"message\":\"Role name is added to account number %d of the benchmark\"}\n", i % 97, i % 251, i % 13, i
    }' | "$NXAUDIT" --base-dir "$WORK" --config "$CONFIG" send >/dev/null
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || true
    DAEMON_PID=
    # The daemon compresses rotated files in the background; a restart
    # finishes what a stop interrupted. Wait until no plain rotated file is
    # left.
    "$BIN/nxauditd" --base-dir "$WORK" --config "$CONFIG" 2>>"$WORK/nxauditd.stderr" &
    DAEMON_PID=$!
    while ls "$WORK"/log/audit-*.log >/dev/null 2>&1; do sleep 0.5; done
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || true
    DAEMON_PID=
fi

echo "== log set" >&2
du -sh --apparent-size "$WORK"/log/audit-*.log.zst "$WORK"/log/audit.log | tail -n 3 >&2
echo "files: $(ls "$WORK"/log | wc -l), uncompressed bytes: $( { zstdcat "$WORK"/log/*.zst; cat "$WORK"/log/audit.log; } | wc -c)" >&2
"$NXAUDIT" --base-dir "$WORK" --config "$CONFIG" verify

FLOOR="{ zstdcat $WORK/log/*.zst; cat $WORK/log/audit.log; } | openssl dgst -sha256"
VERIFY="$NXAUDIT --base-dir $WORK --config $CONFIG verify"
time_of() { # prints wall seconds of one run
    local s e
    s=$(date +%s.%N)
    sh -c "$1" >/dev/null
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
echo "== $RUNS runs each, alternating (seconds: verify floor ratio)" >&2
time_of "$VERIFY" >/dev/null
time_of "$FLOOR" >/dev/null
for _ in $(seq "$RUNS"); do
    v=$(time_of "$VERIFY")
    f=$(time_of "$FLOOR")
    echo "$v $f $(echo "scale=2; $v / $f" | bc)"
done
