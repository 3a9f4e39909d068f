#!/usr/bin/env bash
# Cost from sale to sale: runs SALES consecutive sales of USERS requests for SEATS seats
# each (ticketnest-load sale, 64 in flight) against one pub-api and one sub-worker
# (release builds) that live through all of them, on a fresh database and Redis
# prefix. After each sale it records the accept and decide rates, the CPU seconds the
# worker, pub-api and their PostgreSQL backends spent on it (per 100,000 decisions),
# resident memory of both services, Redis used_memory and the size of the tables and
# indexes. A cost that grows inside a long-lived process or backend shows as a rising
# column.
#
#   bench/soak.sh                      # 5 sales of 200,000 requests, 10,000 seats
#   bench/soak.sh 3 20000 1000         # a quick look
#
# Environment passed on to both services, for instance
# TICKETNEST_DATABASE_MAX_CONN_AGE_SECS. Writes bench/results/soak-<stamp>.md.
# Every sale's decision log is checked by ticketnest-load (no oversell, exact FIFO,
# every accepted request decided); a sale that fails the check stops the run.
# Asserts nothing about speed; CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

sales=${1:-5}
users=${2:-200000}
seats=${3:-10000}

scripts/services.sh
# psql logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
echo "[soak] building release binaries"
cargo build --release --bins -q
bin=target/release

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo "-dirty")
db=ticketnest_bench_soak
api_pid=""; worker_pid=""
psql_admin() { psql -d postgres -Atq "$@"; }
cleanup() {
  for pid in $api_pid $worker_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli --scan --pattern "$TICKETNEST_REDIS_PREFIX:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
TICKETNEST_DATABASE_URL=$(pg_url "$db")
export TICKETNEST_DATABASE_URL
export TICKETNEST_REDIS_PREFIX="tnsoak$stamp"
export TICKETNEST_JWT_SECRET="bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TICKETNEST_HTTP_ADDR=127.0.0.1:18082
export TICKETNEST_BACKLOG_LIMIT=1000000000
export RUST_LOG=warn
url="http://$TICKETNEST_HTTP_ADDR"
"$bin/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
"$bin/pub-api" >"$work/api.log" 2>&1 & api_pid=$!
for _ in $(seq 150); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$url/readyz" >/dev/null || { cat "$work/api.log"; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_of() { # CPU seconds (user + system) of the processes given, 0 for any gone
  local total=0 t
  for pid in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  python3 -c "print($total / $ticks)"
}
backends() { psql_admin -c "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
used_memory_mb() { redis-cli INFO memory | awk -F: '/^used_memory:/ { gsub(/\r/, "", $2); printf "%.1f", $2 / 1048576 }'; }
sizes_mb() { # table (heap) and index MB of bookings and booking_requests together
  psql -d "$db" -Atq -F ' ' -c "SELECT round(sum(pg_table_size(c))::numeric / 1048576, 1), \
    round(sum(pg_indexes_size(c))::numeric / 1048576, 1) \
    FROM unnest(ARRAY['bookings', 'booking_requests']::regclass[]) AS c"
}
field() { python3 -c "import json, sys; print(round(json.load(open(sys.argv[1]))$2))" "$1"; }

table="$work/table.md"
{
  echo "| sale | accept/s | decide/s | decide/s after send | worker CPU s /100k | pub-api CPU s /100k | PostgreSQL backends CPU s /100k | backends | RSS pub-api / worker MB | Redis MB | bookings + requests heap / index MB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > "$table"
for i in $(seq "$sales"); do
  # The backends that exist now are the ones a long-lived pool keeps; a backend opened
  # during the sale is counted from 0 (and one closed during it is lost: with
  # recycling on, that column undercounts).
  mapfile -t pg_before < <(backends)
  declare -A start=()
  for pid in "${pg_before[@]}"; do start[$pid]=$(cpu_of "$pid"); done
  w0=$(cpu_of "$worker_pid"); a0=$(cpu_of "$api_pid")
  echo "[soak] sale $i/$sales: $users requests, $seats seats"
  "$bin/ticketnest-load" sale --url "$url" --users "$users" --seats "$seats" --concurrency 64 \
    --no-progress --json "$work/sale$i.json" >"$work/sale$i.log" 2>&1 || { tail -20 "$work/sale$i.log"; exit 1; }
  w1=$(cpu_of "$worker_pid"); a1=$(cpu_of "$api_pid")
  pg=0
  mapfile -t pg_after < <(backends)
  for pid in "${pg_after[@]}"; do
    pg=$(python3 -c "print($pg + $(cpu_of "$pid") - ${start[$pid]:-0})")
  done
  unset start
  decided=$(field "$work/sale$i.json" "['outcomes']['decided']")
  per100k() { python3 -c "print(f'{($2 - $1) * 100000 / max($decided, 1):.2f}')"; }
  read -r heap idx < <(sizes_mb)
  echo "| $i | $(field "$work/sale$i.json" "['accept_per_s']") | $(field "$work/sale$i.json" "['decide_per_s']") \
| $(field "$work/sale$i.json" ".get('decide_after_send_per_s', 0)") \
| $(per100k "$w0" "$w1") | $(per100k "$a0" "$a1") | $(per100k 0 "$pg") | ${#pg_after[@]} \
| $(rss_mb "$api_pid") / $(rss_mb "$worker_pid") | $(used_memory_mb) | $heap / $idx |" | tee -a "$table"
done

out="bench/results/soak-$stamp.md"
{
  echo "# $sales consecutive sales of $users requests for $seats seats ($stamp, $commit)"
  echo
  echo "Command: \`bench/soak.sh $sales $users $seats\`$(env | grep -E '^TICKETNEST_DATABASE_MAX_CONN_AGE_SECS=' | sed 's/^/ with /; s/$//')."
  echo "One pub-api and one sub-worker (release) living through every sale, 64 in flight."
  echo "CPU columns: seconds of CPU per 100,000 decisions during the sale. The PostgreSQL column"
  echo "sums the backends of both services' pools; the load tool's own backend (creating users,"
  echo "checking the decision log) is not counted."
  echo
  cat "$table"
} > "$out"
echo "[soak] wrote $out"
