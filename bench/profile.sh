#!/usr/bin/env bash
# Profiles pub-api and sub-worker under load: starts both (release builds) on a fresh
# database, drives the accept path with wrk for 10 s, and records each process with
# `perf record` (5 s for pub-api, 2 s for the worker). Prints where the time goes.
#
#   bench/profile.sh
#   perf report -i /tmp/ticketnest-perf-api.data      # to dig further
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# psql logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)"; exit 1; }
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --bins -q
bin=target/release
db=tnprofile
work=$(mktemp -d)
TICKETNEST_DATABASE_URL=$(pg_url "$db")
export TICKETNEST_DATABASE_URL
export TICKETNEST_REDIS_PREFIX="tnprofile$$"
export TICKETNEST_JWT_SECRET="profile-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TICKETNEST_HTTP_ADDR=127.0.0.1:18081 TICKETNEST_BACKLOG_LIMIT=1000000000 RUST_LOG=warn
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
"$bin/ticketnest-admin" user bulk-create --count 1 --tag "po$$" --organizer --tokens "$work/org.csv" >/dev/null
goods=$(curl -s -XPOST "$url/api/goods" -H "authorization: Bearer $(cut -d, -f2 "$work/org.csv")" \
  -H 'content-type: application/json' \
  -d '{"title":"profile","content":"","price":0,"imgUrl":"","showDate":"2030-01-01","bookingLimit":1000}' \
  | sed -E 's/.*"id":([0-9]+).*/\1/')
"$bin/ticketnest-admin" user bulk-create --count 200000 --tag "pu$$" --tokens "$work/tokens.csv" >/dev/null
TOKENS="$work/tokens.csv" GOODS="$goods" wrk -t2 -c64 -d10s --latency -s bench/wrk-booking.lua "$url" >"$work/wrk.txt" &
wrk_pid=$!
sleep 2
perf record -F 999 -g -p "$api" -o /tmp/ticketnest-perf-api.data -- sleep 5 >/dev/null 2>&1
perf record -F 999 -g -p "$worker" -o /tmp/ticketnest-perf-worker.data -- sleep 2 >/dev/null 2>&1 || true
wait "$wrk_pid"
grep -E "Requests/sec|99%" "$work/wrk.txt"
for who in api worker; do
  echo "== $who: time by binary"
  perf report -i "/tmp/ticketnest-perf-$who.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -5
  echo "== $who: hottest symbols"
  perf report -i "/tmp/ticketnest-perf-$who.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | cut -c1-110 | head -15
done
