#!/usr/bin/env bash
# TicketNest benchmarks: the limits of the parts (redis-benchmark XADD, pgbench in the
# worker's commit shape and in the naive row-lock-per-booking shape), TicketNest end
# to end (ticketnest-load sale and ramp, with the load tool's own ceiling), and the
# accept path alone driven by wrk as an independent cross-check, all in one run on
# this machine. Prints every TicketNest figure as a ratio to the limit of the part it
# rests on, and writes bench/results/<stamp>.json and .md, copied to
# bench/results/latest.{json,md}.
#
#   bench/run.sh           # full: 20,000/1,000 and 200,000/10,000 sales (about 12 min)
#   bench/run.sh --quick   # 20,000/1,000 only, shorter steps (about 4 min)
#
# Benchmarks assert nothing about speed; CI does not run them.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true
if $quick; then
  echo "== bench (quick): about 4 minutes on a 2-core machine"
  pg_secs=5; wrk_secs=5; step_secs=3
else
  echo "== bench (full): about 12 minutes on a 2-core machine"
  pg_secs=10; wrk_secs=10; step_secs=5
fi

scripts/services.sh
# psql and pgbench log in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
if ! command -v wrk >/dev/null 2>&1; then
  echo "[bench] installing wrk"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
echo "[bench] building release binaries"
cargo build --release --bins -q
bin=target/release

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
results=bench/results
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo "-dirty")
api_pid=""; worker_pid=""; sampler_pid=""
cleanup() {
  for pid in $sampler_pid $api_pid $worker_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Leave nothing behind in the shared PostgreSQL and Redis.
  if [ -n "${TICKETNEST_REDIS_PREFIX:-}" ]; then
    redis-cli --scan --pattern "$TICKETNEST_REDIS_PREFIX:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  fi
  psql -d postgres -Atq -c "DROP DATABASE IF EXISTS ticketnest_bench_e2e WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

psql_admin() { psql -d postgres -Atq "$@"; }
recreate_db() { psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }

# ---------------------------------------------------------------- (a) the parts' limits
echo "[bench] (a) redis-benchmark XADD, 50 clients, unpipelined and pipelined"
xadd_key="tnbench{$stamp}:xadd"
xadd() { # extra args
  redis-benchmark -h 127.0.0.1 -p 6379 -c 50 -n 300000 "$@" --csv XADD "$xadd_key" '*' f v \
    | awk -F'","' 'NR==2 {gsub(/"/, "", $2); print $2}'
}
xadd_per_s=$(xadd)
xadd_pipelined_per_s=$(xadd -P 16)
redis-cli -h 127.0.0.1 DEL "$xadd_key" >/dev/null
echo "  XADD/s: $xadd_per_s unpipelined, $xadd_pipelined_per_s pipelined (-P 16)"

echo "[bench] (a) pgbench: worker-shaped batches of 100 and of 1,000, and the naive shape"
recreate_db ticketnest_bench
psql -d ticketnest_bench -q -f bench/pgbench-schema.sql
tps() { pgbench -n "$@" ticketnest_bench 2>/dev/null | awk '/^tps = / {print $3}'; }
batch_tps=$(tps -c 1 -T "$pg_secs" -f bench/pgbench-batch.sql)
batch1000_tps=$(tps -c 1 -T "$pg_secs" -D n=1000 -f bench/pgbench-batch.sql)
naive_tps=$(tps -c 8 -j 2 -T "$pg_secs" -f bench/pgbench-naive.sql)
pg_batch=$(python3 -c "print(round($batch_tps * 100))")
pg_batch1000=$(python3 -c "print(round($batch1000_tps * 1000))")
pg_naive=$(python3 -c "print(round($naive_tps))")
echo "  decisions/s: $pg_batch (batch 100), $pg_batch1000 (batch 1000), naive: $pg_naive bookings/s"
psql_admin -c "DROP DATABASE IF EXISTS ticketnest_bench WITH (FORCE)"

# ---------------------------------------------------------------- (b) TicketNest end to end
echo "[bench] (b) starting pub-api and sub-worker (release) on a fresh database"
recreate_db ticketnest_bench_e2e
TICKETNEST_DATABASE_URL=$(pg_url ticketnest_bench_e2e)
export TICKETNEST_DATABASE_URL
export TICKETNEST_REDIS_PREFIX="tnbench$stamp"
export TICKETNEST_JWT_SECRET="bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TICKETNEST_HTTP_ADDR=127.0.0.1:18080
export TICKETNEST_BACKLOG_LIMIT=1000000000
export RUST_LOG=warn
url="http://$TICKETNEST_HTTP_ADDR"
"$bin/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
"$bin/pub-api" >"$work/api.log" 2>&1 & api_pid=$!
for _ in $(seq 150); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$url/readyz" >/dev/null || { cat "$work/api.log"; exit 1; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
rss_api_idle=$(rss_mb "$api_pid"); rss_worker_idle=$(rss_mb "$worker_pid")
# Peak RSS of both while the load runs.
( peak_api=0; peak_worker=0
  while kill -0 "$api_pid" 2>/dev/null; do
    a=$(awk '/VmRSS/ {print $2}' "/proc/$api_pid/status" 2>/dev/null || echo 0)
    w=$(awk '/VmRSS/ {print $2}' "/proc/$worker_pid/status" 2>/dev/null || echo 0)
    [ "$a" -gt "$peak_api" ] && peak_api=$a; [ "$w" -gt "$peak_worker" ] && peak_worker=$w
    echo "$peak_api $peak_worker" > "$work/peak_rss"; sleep 0.5
  done ) & sampler_pid=$!

load() { "$bin/ticketnest-load" "$@"; }
echo "[bench] (b) sale: 20,000 users, 1,000 seats, 64 in flight"
load sale --url "$url" --users 20000 --seats 1000 --concurrency 64 --json "$work/sale20k.json" --plot "$results/latest-sale20k.png"
# The ramp then runs again against GET /healthz from the knee up: the driver's own
# ceiling on this machine; the knee counts as the server's only under half of it.
echo "[bench] (b) ramp: open loop from 4,000 req/s, x1.25 per ${step_secs}s step, SLO p99 <= 20 ms, then the driver's ceiling"
load ramp --url "$url" --start-rate 4000 --factor 1.25 --step-secs "$step_secs" --slo-p99-ms 20 --json "$work/ramp.json"
read -r peak_api_kb peak_worker_kb < "$work/peak_rss"
rss_api_after_20k=$(rss_mb "$api_pid"); rss_worker_after_20k=$(rss_mb "$worker_pid")
rss_api_200k_1=""; rss_api_200k_2=""; rss_worker_200k_1=""; rss_worker_200k_2=""
if ! $quick; then
  for run in 1 2; do
    echo "[bench] (b) sale $run/2: 200,000 users, 10,000 seats, 64 in flight"
    plot_args=()
    [ "$run" = 2 ] && plot_args=(--plot "$results/latest-sale200k.png")
    load sale --url "$url" --users 200000 --seats 10000 --concurrency 64 --json "$work/sale200k-$run.json" "${plot_args[@]}"
    eval "rss_api_200k_$run=$(rss_mb "$api_pid")"; eval "rss_worker_200k_$run=$(rss_mb "$worker_pid")"
  done
fi

# ---------------------------------------------------------------- (c) wrk cross-check
echo "[bench] (c) wrk: the accept path alone, 2 threads, 64 connections, ${wrk_secs}s"
"$bin/ticketnest-admin" user bulk-create --count 1 --tag "wrko$stamp" --organizer --tokens "$work/org.csv" >/dev/null
org_token=$(cut -d, -f2 "$work/org.csv")
goods=$(curl -s -XPOST "$url/api/goods" -H "authorization: Bearer $org_token" -H 'content-type: application/json' \
  -d '{"title":"wrk","content":"","price":0,"imgUrl":"","showDate":"2030-01-01","bookingLimit":1000}' \
  | sed -E 's/.*"id":([0-9]+).*/\1/')
"$bin/ticketnest-admin" user bulk-create --count 200000 --tag "wrku$stamp" --tokens "$work/tokens.csv" >/dev/null
TOKENS="$work/tokens.csv" GOODS="$goods" wrk -t2 -c64 -d"${wrk_secs}s" --latency -s bench/wrk-booking.lua "$url" > "$work/wrk.txt" &
wrk_pid=$!
# wrk's own CPU (cores) while it sends, from /proc (utime + stime, in USER_HZ = 100
# ticks), leaving out its first second (loading the tokens) and its last.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || true; }
sleep 1
t0=$(cpu_ticks "$wrk_pid"); s0=$(date +%s.%N)
sleep $((wrk_secs - 2))
t1=$(cpu_ticks "$wrk_pid"); s1=$(date +%s.%N)
wait "$wrk_pid"
wrk_cpu_cores=""
[ -n "$t0" ] && [ -n "$t1" ] && wrk_cpu_cores=$(python3 -c "print(round(($t1 - $t0) / 100 / ($s1 - $s0), 3))")
cat "$work/wrk.txt"
echo "  wrk's own CPU while sending: $wrk_cpu_cores cores"
wrk_rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
wrk_p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
wrk_non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt"); wrk_non2xx=${wrk_non2xx:-0}

# ---------------------------------------------------------------- results
export stamp commit quick xadd_per_s xadd_pipelined_per_s pg_batch pg_batch1000 pg_naive \
  rss_api_idle rss_worker_idle rss_api_after_20k rss_worker_after_20k peak_api_kb peak_worker_kb \
  rss_api_200k_1 rss_api_200k_2 rss_worker_200k_1 rss_worker_200k_2 wrk_rps wrk_p99 wrk_non2xx wrk_cpu_cores work results
python3 bench/summarize.py
