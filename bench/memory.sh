#!/usr/bin/env bash
# Redis memory from sale to sale: runs SALES consecutive sales of USERS requests each
# (ticketnest-load sale, 1,000 seats each) against one pub-api and one sub-worker
# (release builds) on a fresh database and Redis prefix, and after each sale records
# what TicketNest keeps in Redis: entries left in the shard streams and their bytes,
# status hashes and their bytes, rate-limit keys, and the server's used_memory. Then
# waits for the decided statuses to expire and records it once more.
#
#   bench/memory.sh                # 10 sales of 100,000 requests (about 6 minutes)
#   bench/memory.sh 3 20000        # a quick look
#
# Decided statuses live TICKETNEST_STATUS_TTL_SECS (default here 30 s, so that the
# steady state shows within the run; the product default is 300 s). Writes
# bench/results/memory-<stamp>.md. Asserts nothing; CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

sales=${1:-10}
users=${2:-100000}
export TICKETNEST_STATUS_TTL_SECS=${TICKETNEST_STATUS_TTL_SECS:-30}

scripts/services.sh
# psql logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
echo "[memory] building release binaries"
cargo build --release --bins -q
bin=target/release

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo "-dirty")
db=ticketnest_bench_memory
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
export TICKETNEST_REDIS_PREFIX="tnmem$stamp"
export TICKETNEST_JWT_SECRET="bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TICKETNEST_HTTP_ADDR=127.0.0.1:18081
export TICKETNEST_BACKLOG_LIMIT=1000000000
export RUST_LOG=warn
shards=16
url="http://$TICKETNEST_HTTP_ADDR"
"$bin/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
"$bin/pub-api" >"$work/api.log" 2>&1 & api_pid=$!
for _ in $(seq 150); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$url/readyz" >/dev/null || { cat "$work/api.log"; exit 1; }

r() { redis-cli "$@"; }
sum_over_shards() { # sum_over_shards COMMAND (XLEN or "MEMORY USAGE") KEYSUFFIX
  local total=0 n
  for s in $(seq 0 $((shards - 1))); do
    # shellcheck disable=SC2086
    n=$(r $1 "$TICKETNEST_REDIS_PREFIX:{s$s}:$2")
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
count_keys() { r --scan --pattern "$TICKETNEST_REDIS_PREFIX:*:$1:*" | wc -l; }
status_bytes() { # total bytes of status hashes, from the size of a sample of 200
  local n=$1 sample
  [ "$n" -eq 0 ] && { echo 0; return; }
  sample=$(r --scan --pattern "$TICKETNEST_REDIS_PREFIX:*:req:*" | head -n 200 \
    | while read -r key; do r MEMORY USAGE "$key"; done | awk '{ s += $1; n++ } END { if (n) printf "%d", s / n }')
  echo $(( ${sample:-0} * n ))
}
used_memory() { r INFO memory | awk -F: '/^used_memory:/ { gsub(/\r/, "", $2); print $2 }'; }
mb() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }

table="$work/table.md"
echo "| after | stream entries left | stream bytes | status hashes | status bytes | rate keys | Redis used_memory |" > "$table"
echo "|---|---|---|---|---|---|---|" >> "$table"
record() { # record LABEL
  local entries bytes statuses sbytes rates used
  entries=$(sum_over_shards XLEN stream)
  bytes=$(sum_over_shards "MEMORY USAGE" stream)
  statuses=$(count_keys req)
  sbytes=$(status_bytes "$statuses")
  rates=$(count_keys rate)
  used=$(used_memory)
  echo "| $1 | $entries | $(mb "$bytes") MB | $statuses | $(mb "$sbytes") MB | $rates | $(mb "$used") MB |" | tee -a "$table"
}

record "start"
for i in $(seq "$sales"); do
  echo "[memory] sale $i/$sales: $users requests, 1,000 seats"
  "$bin/ticketnest-load" sale --url "$url" --users "$users" --seats 1000 --concurrency 64 \
    --json "$work/sale$i.json" >"$work/sale$i.log" 2>&1 || { tail -20 "$work/sale$i.log"; exit 1; }
  record "sale $i"
done
echo "[memory] waiting $((TICKETNEST_STATUS_TTL_SECS + 5)) s for decided statuses to expire"
sleep $((TICKETNEST_STATUS_TTL_SECS + 5))
record "statuses expired"

out="bench/results/memory-$stamp.md"
{
  echo "# Redis memory over $sales consecutive sales of $users requests ($stamp, $commit)"
  echo
  echo "Command: \`bench/memory.sh $sales $users\` (TICKETNEST_STATUS_TTL_SECS=$TICKETNEST_STATUS_TTL_SECS)."
  echo "One pub-api and one sub-worker (release), $shards shards, 1,000 seats per sale, 64 in flight."
  echo "Redis used_memory is the whole server's (other users of the same Redis count too)."
  echo
  cat "$table"
} > "$out"
echo "[memory] wrote $out"
