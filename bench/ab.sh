#!/usr/bin/env bash
# A/B of two commits on this machine: the accept path under wrk and a 20,000-user sale
# under ticketnest-load, alternating the two builds run after run, so that the spread
# between runs of the same build (the noise) is measured together with the difference.
#
#   bench/ab.sh BEFORE [AFTER] [RUNS]   # AFTER defaults to HEAD, RUNS to 3
#
# Builds both commits' release binaries in temporary worktrees (sharing target/ab), runs
# each configuration on a fresh database and Redis prefix, prints one line per run and
# writes bench/results/ab-<stamp>.md. The same wrk script drives both accept paths; each
# build's own ticketnest-load drives its sale (its correctness verdict reads that build's
# schema). A sale that fails shows as FAILED, never as another run's figures.
# Asserts nothing about speed; CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

before=${1:?usage: bench/ab.sh BEFORE [AFTER] [RUNS]}
after=${2:-HEAD}
runs=${3:-3}
scripts/services.sh
# psql logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
repo=$(pwd)
prefix=""; api_pid=""; worker_pid=""
psql_admin() { psql -d postgres -Atq "$@"; }
cleanup() {
  for pid in $api_pid $worker_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$prefix" ] && redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  psql_admin -c "DROP DATABASE IF EXISTS ticketnest_bench_ab WITH (FORCE)" >/dev/null || true
  for dir in "$work"/src-*; do [ -d "$dir" ] && git worktree remove --force "$dir"; done
  rm -rf "$work"
}
trap cleanup EXIT

build() { # label rev
  local dir="$work/src-$1"
  git worktree add -q --detach "$dir" "$2"
  echo "[ab] building $1 = $(git rev-parse --short "$2")"
  # A target dir of its own: sources checked out here are newer than any artifact,
  # but the main checkout's are not, and cargo decides freshness by mtime.
  (cd "$dir" && CARGO_TARGET_DIR="$repo/target/ab" cargo build --release --bins -q)
  mkdir -p "$work/bin-$1"
  cp "$repo"/target/ab/release/{pub-api,sub-worker,ticketnest-admin,ticketnest-load} "$work/bin-$1/"
}
build before "$before"
build after "$after"

export TICKETNEST_JWT_SECRET="ab-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TICKETNEST_DATABASE_URL=$(pg_url ticketnest_bench_ab)
export TICKETNEST_DATABASE_URL
export TICKETNEST_HTTP_ADDR=127.0.0.1:18091 TICKETNEST_BACKLOG_LIMIT=1000000000 RUST_LOG=warn
url="http://$TICKETNEST_HTTP_ADDR"

start() { # label run
  prefix="tnab${1}${2}$stamp"
  export TICKETNEST_REDIS_PREFIX=$prefix
  psql_admin -c "DROP DATABASE IF EXISTS ticketnest_bench_ab WITH (FORCE)" -c "CREATE DATABASE ticketnest_bench_ab" >/dev/null
  "$work/bin-$1/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
  "$work/bin-$1/pub-api" >"$work/api.log" 2>&1 & api_pid=$!
  for _ in $(seq 150); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "$url/readyz" >/dev/null || { cat "$work/api.log"; exit 1; }
}
stop() {
  kill -TERM "$api_pid" "$worker_pid"; wait "$api_pid" "$worker_pid" 2>/dev/null || true
  api_pid=""; worker_pid=""
  redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
}
wrk_run() { # label run -> "req/s p99"
  local admin="$work/bin-$1/ticketnest-admin"
  "$admin" user bulk-create --count 1 --tag "abo$1$2$stamp" --organizer --tokens "$work/org.csv" >/dev/null
  local org goods
  org=$(cut -d, -f2 "$work/org.csv")
  goods=$(curl -s -XPOST "$url/api/goods" -H "authorization: Bearer $org" -H 'content-type: application/json' \
    -d '{"title":"ab","content":"","price":0,"imgUrl":"","showDate":"2030-01-01","bookingLimit":1000}' \
    | sed -E 's/.*"id":([0-9]+).*/\1/')
  "$admin" user bulk-create --count 200000 --tag "abu$1$2$stamp" --tokens "$work/tokens.csv" >/dev/null
  TOKENS="$work/tokens.csv" GOODS="$goods" wrk -t2 -c64 -d10s --latency -s bench/wrk-booking.lua "$url" > "$work/wrk.txt"
  echo "$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk.txt") $(awk '$1 == "99%" {print $2}' "$work/wrk.txt")"
}
sale_run() { # label -> "accepted/s p99 decided/s correct"
  rm -f "$work/sale.json"
  if ! "$work/bin-$1/ticketnest-load" sale --url "$url" --users 20000 --seats 1000 \
      --concurrency 64 --json "$work/sale.json" >"$work/sale.log" 2>&1; then
    echo "- - - FAILED"; tail -3 "$work/sale.log" >&2; return
  fi
  python3 - "$work/sale.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['accept_per_s']:.0f} {r['accept_latency_ms']['p99']:.2f}ms {r['decide_per_s']:.0f} {'OK' if r['correct'] else 'BREACHED'}")
PY
}

rows=()
for run in $(seq "$runs"); do
  for label in before after; do
    start "$label" "$run"
    # The sale first: it waits until its own requests are decided, so wrk's flood
    # (decided in the background afterwards) never overlaps another measurement.
    read -r sale_acc sale_p99 sale_dec correct <<<"$(sale_run "$label")"
    read -r wrk_rps wrk_p99 <<<"$(wrk_run "$label" "$run")"
    stop
    row="| $label | $run | $wrk_rps | $wrk_p99 | $sale_acc | $sale_p99 | $sale_dec | $correct |"
    echo "$row"; rows+=("$row")
  done
done

out=bench/results/ab-$stamp.md
{
  echo "# A/B $stamp"
  echo
  echo "Command \`bench/ab.sh $before $after $runs\`: before = \`$(git rev-parse --short "$before")\`, after = \`$(git rev-parse --short "$after")\`,"
  echo "alternating on this machine ($(nproc) CPUs), each run on a fresh database and Redis prefix."
  echo "wrk: accept path alone, 2 threads, 64 connections, 10 s. Sale: ticketnest-load, 20,000 users, 1,000 seats, 64 in flight."
  echo
  echo "| build | run | wrk req/s | wrk p99 | sale accept/s | sale p99 | decide/s | correctness |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} > "$out"
echo "written: $out"
