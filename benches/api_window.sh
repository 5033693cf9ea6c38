#!/usr/bin/env bash
# Benchmark of the time-window search (issue 6): on a generated ~1 GB log
# set, time to first byte and total time of a 1-hour window in the middle,
# through the Audit trail API (`nxaudit serve`, HTTPS, measured by curl) and
# through `nxaudit query`, against grep of the same window over all files in
# the same run. The three outputs must be byte-identical.
#
# Usage: benches/api_window.sh
# Environment:
#   NXAUDIT_BENCH_BYTES     uncompressed size of the log set (default 1 GiB)
#   NXAUDIT_BENCH_COMPRESS  rotated files: none (default), zstd, zstd-frames
#                           (independent 1 MiB frames cut at lines) or gzip
#   NXAUDIT_BENCH_DIR       work directory (default: a new temp dir, removed
#                           at the end; a given one is kept and its log
#                           set reused when it exists)
#   RUNS                    measured runs after one warm-up (default 5)
#
# Targets: first byte <= 50 ms; total >= 20x faster than the full scan.
# Page cache is warm for every contender (no root to drop it).

set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${NXAUDIT_BENCH_BYTES:-1073741824}
COMPRESS=${NXAUDIT_BENCH_COMPRESS:-none}
RUNS=${RUNS:-5}
if [[ -n "${NXAUDIT_BENCH_DIR:-}" ]]; then
    WORK=$NXAUDIT_BENCH_DIR
    KEEP=1
else
    WORK=$(mktemp -d /tmp/nxaudit-bench.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORK"
SERVER_PID=
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ $KEEP == 0 ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet --bin nxaudit
NXAUDIT=${CARGO_TARGET_DIR:-target}/release/nxaudit

LOG=$WORK/log
if [[ ! -s $WORK/bench.info ]]; then
    echo "== generating $BYTES bytes of log (rotated files: $COMPRESS) in $LOG" >&2
    rm -rf "$LOG"
    NXAUDIT_BENCH_DIR=$LOG NXAUDIT_BENCH_BYTES=$BYTES NXAUDIT_BENCH_COMPRESS=$COMPRESS \
        cargo test --release --quiet --test it -- --ignored --exact query::bench_generate_logset --nocapture \
        | grep '^BENCH ' >"$WORK/bench.info"
fi
cat "$WORK/bench.info" >&2
HOUR=$(sed -n 's/.* hour=\([^ ]*\).*/\1/p' "$WORK/bench.info")
START_EPOCH=$(date -u -d "${HOUR/T/ }:00:00" +%s)
BEFORE=$(date -u -d "@$((START_EPOCH + 3600))" +%Y-%m-%dT%H:%M:%S)
echo "== window [$HOUR:00:00Z, ${BEFORE}Z): before_date=$BEFORE elapsed_hours=1" >&2
du -sh --apparent-size "$LOG" >&2
ls "$LOG" | wc -l | sed 's/^/files: /' >&2

# TLS certificate, HS256 secret, token, config.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$WORK/jwt.secret"
b64url() { base64 | tr -d '\n=' | tr '+/' '-_'; }
HEADER=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
PAYLOAD=$(printf '{"sub":"bench","exp":%d,"scope":"service:audit-trail"}' $(($(date +%s) + 3600)) | b64url)
SIG=$(printf '%s.%s' "$HEADER" "$PAYLOAD" | openssl dgst -sha256 -hmac "$(cat "$WORK/jwt.secret")" -binary | b64url)
TOKEN="$HEADER.$PAYLOAD.$SIG"
cat >"$WORK/nxauditd.toml" <<EOF
log_dir = "$LOG"
state_dir = "$WORK/state"
socket = "$WORK/audit.sock"
syslog_socket = "$WORK/syslog.sock"
[api]
listen = "127.0.0.1:0"
role = "portal"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
jwt_key_file = "$WORK/jwt.secret"
jwt_algorithms = ["HS256"]
env_file = "$WORK/.env"
EOF

"$NXAUDIT" --config "$WORK/nxauditd.toml" serve >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 200); do
    grep -q listening "$WORK/serve.out" 2>/dev/null && break
    sleep 0.05
done
ADDR=$(sed -n 's|.*https://\([^ ]*\).*|\1|p' "$WORK/serve.out")
[[ -n "$ADDR" ]] || { cat "$WORK/serve.err" >&2; echo "server did not start" >&2; exit 1; }
URL="https://$ADDR/audit-trail/api/v1/portal/type/auditlog?before_date=$BEFORE&elapsed_hours=1"

now_ms() { awk -v t="$EPOCHREALTIME" 'BEGIN {printf "%.3f", t * 1000}'; }

# grep of the same window over every file, in log order.
grep_window() {
    local f
    for f in $(ls "$LOG" | grep '^audit-' | sort) audit.log; do
        case $f in
        *.zst) zstd -dcq "$LOG/$f" | LC_ALL=C grep -h "^$HOUR:" || true ;;
        *.gz) zcat "$LOG/$f" | LC_ALL=C grep -h "^$HOUR:" || true ;;
        *) LC_ALL=C grep -h "^$HOUR:" "$LOG/$f" || true ;;
        esac
    done
}

# curl's own timings: TLS handshake, first response byte (status line), total.
curl_run() {
    curl -sS --cacert "$WORK/cert.pem" -H "Authorization: Bearer $TOKEN" -o "$WORK/curl.out" \
        -w '%{http_code} %{time_appconnect} %{time_starttransfer} %{time_total}\n' "$URL"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

echo "== warm-up" >&2
curl_run >/dev/null
"$NXAUDIT" --config "$WORK/nxauditd.toml" query --before-date "$BEFORE" --elapsed-hours 1 >"$WORK/query.out"
grep_window >"$WORK/grep.out"

echo "== API, Rust client (new TLS connection per run)" >&2
NXAUDIT_BENCH_URL=$URL NXAUDIT_BENCH_TOKEN=$TOKEN NXAUDIT_BENCH_OUT=$WORK/api.out RUNS=$RUNS \
    cargo test --release --quiet --test it -- --ignored --exact query::bench_client --nocapture \
    | grep '^BENCHCLIENT' | tee "$WORK/api.times" >&2

: >"$WORK/curl.times"
: >"$WORK/query.times"
: >"$WORK/grep.times"
for i in $(seq 1 "$RUNS"); do
    read -r code hs head total < <(curl_run)
    [[ $code == 200 ]] || { echo "API answered $code" >&2; cat "$WORK/curl.out" >&2; exit 1; }
    echo "$hs $head $total" >>"$WORK/curl.times"
    t0=$(now_ms)
    "$NXAUDIT" --config "$WORK/nxauditd.toml" query --before-date "$BEFORE" --elapsed-hours 1 >"$WORK/query.out"
    t1=$(now_ms)
    grep_window >"$WORK/grep.out"
    t2=$(now_ms)
    echo "$t0 $t1" | awk '{print $2 - $1}' >>"$WORK/query.times"
    echo "$t1 $t2" | awk '{print $2 - $1}' >>"$WORK/grep.times"
    echo "run $i: curl head ${head}s total ${total}s; query $(tail -1 "$WORK/query.times") ms; grep $(tail -1 "$WORK/grep.times") ms" >&2
done

for f in api curl query; do
    cmp -s "$WORK/$f.out" "$WORK/grep.out" || { echo "$f output differs from grep" >&2; exit 1; }
done

FIRST=$(field first_ms <"$WORK/api.times" | median)
API_TOTAL=$(field total_ms <"$WORK/api.times" | median)
HS=$(awk '{print $1 * 1000}' "$WORK/curl.times" | median)
CURL_HEAD=$(awk '{print $2 * 1000}' "$WORK/curl.times" | median)
CURL_TOTAL=$(awk '{print $3 * 1000}' "$WORK/curl.times" | median)
QUERY=$(median <"$WORK/query.times")
GREP=$(median <"$WORK/grep.times")
LINES=$(wc -l <"$WORK/api.out")
OUT_BYTES=$(wc -c <"$WORK/api.out")
echo
echo "window: 1 hour in the middle ($LINES lines, $OUT_BYTES bytes); log: $(du -sh --apparent-size "$LOG" | cut -f1) in $(ls "$LOG" | wc -l) files, rotated files $COMPRESS; medians of $RUNS runs, outputs identical"
printf 'API, Rust client   : first body byte %.1f ms, total %.1f ms (TLS handshake included)\n' "$FIRST" "$API_TOTAL"
printf 'API, curl          : TLS handshake %.1f ms, response head %.1f ms, total %.1f ms\n' "$HS" "$CURL_HEAD" "$CURL_TOTAL"
printf 'nxaudit query      : total %.1f ms (process start included)\n' "$QUERY"
printf 'grep, all files    : total %.1f ms\n' "$GREP"
awk -v g="$GREP" -v a="$API_TOTAL" -v c="$CURL_TOTAL" -v q="$QUERY" \
    'BEGIN {printf "speed-up vs grep   : API %.0fx (curl %.0fx), query %.0fx\n", g / a, g / c, g / q}'
awk -v t="$FIRST" -v g="$GREP" -v a="$API_TOTAL" 'BEGIN {
    ok = (t <= 50 && g / a >= 20)
    printf "targets (first byte <= 50 ms, total >= 20x faster than grep): %s\n", ok ? "met" : "NOT met"
    exit ok ? 0 : 1
}'
