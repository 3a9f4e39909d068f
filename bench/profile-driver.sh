#!/usr/bin/env bash
# Profiles the load tool's open-loop sender (not the services): starts pub-api and
# sub-worker (release builds) on a fresh database, runs `ticketnest-load sale --rate
# RATE` (open loop, the ramp's sender) and records the load tool with `perf record`
# for 5 s, and with `perf stat` for the whole send phase. Prints where its time goes
# and how much CPU it used per request.
#
#   bench/profile-driver.sh [RATE]          # default 15,000 req/s over 64 connections
#   LOAD=path/to/ticketnest-load bench/profile-driver.sh   # profile another build
#   perf report -i /tmp/ticketnest-perf-load.data          # to dig further
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-15000}
secs=8
scripts/services.sh
# psql logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)"; exit 1; }
cargo build --release --bins -q
bin=target/release
load=${LOAD:-$bin/ticketnest-load}
db=tnprofiledriver
work=$(mktemp -d)
TICKETNEST_DATABASE_URL=$(pg_url "$db")
export TICKETNEST_DATABASE_URL
export TICKETNEST_REDIS_PREFIX="tnprofiledriver$$"
export TICKETNEST_JWT_SECRET="profile-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# A free port: another stack (a soak, a bench) may hold the usual ones.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TICKETNEST_HTTP_ADDR=127.0.0.1:$port TICKETNEST_BACKLOG_LIMIT=1000000000 RUST_LOG=warn
url="http://$TICKETNEST_HTTP_ADDR"
psql -d postgres -Atq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
"$bin/sub-worker" >"$work/worker.log" 2>&1 & worker=$!
"$bin/pub-api" >"$work/api.log" 2>&1 & api=$!
cleanup() {
  kill -TERM "$api" "$worker" 2>/dev/null || true
  wait "$api" "$worker" 2>/dev/null || true
  redis-cli --scan --pattern "$TICKETNEST_REDIS_PREFIX:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  psql -d postgres -Atq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
kill -0 "$api" 2>/dev/null || { cat "$work/api.log"; exit 1; }
users=$((rate * secs))
# perf stat counts the whole run (preparing users too); the send phase dominates.
perf stat -e task-clock -x, -o "$work/stat.csv" -- \
  "$load" sale --url "$url" --users "$users" --seats 1000 --rate "$rate" --connections 64 \
  --no-progress --json "$work/sale.json" >"$work/sale.txt" 2>&1 &
stat_pid=$!
# Wait for the send phase (pub-api counting booking requests), then record 5 s of it.
load_pid=""
for _ in $(seq 600); do
  [ -n "$load_pid" ] || load_pid=$(pgrep -n -P "$stat_pid" ticketnest-load || true)
  [ -n "$load_pid" ] && curl -s "$url/metrics" | grep -qE '^ticketnest_http_requests_total\{.*bookings.*\} [1-9]' && break
  sleep 0.1
done
[ -n "$load_pid" ] || { echo "the load tool did not start"; cat "$work/sale.txt"; exit 1; }
sleep 1
perf record -F 999 -g -p "$load_pid" -o /tmp/ticketnest-perf-load.data -- sleep 5 >/dev/null 2>&1 || true
wait "$stat_pid" || { cat "$work/sale.txt"; exit 1; }
grep -E "^offered|^accepted|^accept latency|^driver cpu|^responses" "$work/sale.txt"
echo "== load tool: CPU over the whole run (perf stat task-clock, ms): $(cut -d, -f1 "$work/stat.csv" | grep -E '^[0-9.]+$' | head -1)"
echo "== load tool: time by binary"
perf report -i /tmp/ticketnest-perf-load.data --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -6
echo "== load tool: hottest symbols"
perf report -i /tmp/ticketnest-perf-load.data --no-children --sort symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | cut -c1-120 | head -25
echo "== load tool: inclusive time (children) by symbol"
perf report -i /tmp/ticketnest-perf-load.data --children --sort symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | cut -c1-140 | head -40
