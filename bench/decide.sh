#!/usr/bin/env bash
# The worker's decide rate on one sale shape, and what it costs: CPU of the worker
# process and of its PostgreSQL backends per 100,000 decisions (from /proc/<pid>/stat;
# less noisy than wall rates on a shared machine). Each run on a fresh database, Redis
# prefix and stack (release binaries).
#
#   bench/decide.sh [--bin DIR] [--runs N] [--worker-after-send] [--pgbench] -- SALE ARGS...
#   bench/decide.sh --worker-after-send -- --users 100000 --seats 100000          # all confirm
#   bench/decide.sh --worker-after-send -- --users 100000 --seats 1000            # mostly waitlisted
#   bench/decide.sh --worker-after-send -- --users 1000 --bookings-per-user 100 --seats 100000
#                                                                # mostly already_booked
#
# --worker-after-send starts the worker only once every booking is queued, so that
# `decide_per_s` (first to last decision) is the worker deciding alone; otherwise the
# worker runs from the start and `decide_after_send_per_s` is the figure for the worker
# alone (meaningful when a backlog is left at the end of the send phase). --pgbench
# first runs pgbench's worker-shaped batch of 100 (as bench/run.sh does) for the ratio.
# The per-user rate limit is off (for --bookings-per-user) and connections are not
# recycled (TICKETNEST_DATABASE_MAX_CONN_AGE_SECS=0). Prints one line per
# run. Asserts nothing about speed.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
runs=1
after_send=false
pgbench_first=false
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --worker-after-send) after_send=true; shift ;;
    --pgbench) pgbench_first=true; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: bench/decide.sh [options] -- SALE ARGS..." >&2; exit 2; }

. scripts/pg-env.sh
db=tn_decide_$$
work=$(mktemp -d)
api_pid=""; worker_pid=""; prefix=""
psql_admin() { psql -d postgres -Atq "$@"; }
stop_stack() {
  for pid in $api_pid $worker_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $api_pid $worker_pid; do wait "$pid" 2>/dev/null || true; done
  api_pid=""; worker_pid=""
  if [ -n "$prefix" ]; then
    redis-cli --scan --pattern "$prefix:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  fi
}
cleanup() {
  stop_stack
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  psql_admin -c "DROP DATABASE IF EXISTS ${db}_pgbench WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if $pgbench_first; then
  psql_admin -c "DROP DATABASE IF EXISTS ${db}_pgbench WITH (FORCE)" -c "CREATE DATABASE ${db}_pgbench"
  psql -d "${db}_pgbench" -q -f bench/pgbench-schema.sql
  tps=$(pgbench -n -c 1 -T 10 -f bench/pgbench-batch.sql "${db}_pgbench" 2>/dev/null | awk '/^tps = / {print $3}')
  echo "pgbench worker-shaped batch of 100: $(python3 -c "print(round($tps * 100))") decisions/s"
  psql_admin -c "DROP DATABASE IF EXISTS ${db}_pgbench WITH (FORCE)"
fi

TICKETNEST_DATABASE_URL=$(pg_url "$db")
export TICKETNEST_DATABASE_URL
export TICKETNEST_JWT_SECRET="decide-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TICKETNEST_HTTP_ADDR=127.0.0.1:18093 TICKETNEST_WORKER_HTTP_ADDR=127.0.0.1:18094
export TICKETNEST_BACKLOG_LIMIT=1000000000 RUST_LOG=warn
export TICKETNEST_USER_RATE_LIMIT=off TICKETNEST_DATABASE_MAX_CONN_AGE_SECS=0
url="http://$TICKETNEST_HTTP_ADDR"

# CPU seconds (user + system) of a process since it started.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# PostgreSQL backend pids serving the connections of process $1.
backends_of() {
  local ports
  ports=$(ss -tnpH state established '( dport = :5432 )' 2>/dev/null \
    | awk -v pid="pid=$1," 'index($0, pid) { n = split($3, a, ":"); print a[n] }' | paste -sd, -)
  [ -n "$ports" ] || return 0
  psql -d "$db" -Atq -c "SELECT pid FROM pg_stat_activity WHERE client_port IN ($ports)"
}
queued() { # entries in the shard streams
  redis-cli --scan --pattern "$prefix:{s*}:stream" | while read -r key; do redis-cli xlen "$key"; done \
    | awk '{ s += $1 } END { print s + 0 }'
}

for run in $(seq "$runs"); do
  prefix="tndecide$$r$run"
  export TICKETNEST_REDIS_PREFIX=$prefix
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  if ! $after_send; then
    "$bin/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
  fi
  "$bin/pub-api" >"$work/api.log" 2>&1 & api_pid=$!
  for _ in $(seq 150); do curl -fs "$url/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "$url/readyz" >/dev/null || { cat "$work/api.log"; exit 1; }
  "$bin/ticketnest-load" sale --url "$url" --concurrency 64 --no-progress --json "$work/sale.json" "$@" \
    >"$work/sale.log" 2>&1 & load_pid=$!
  if $after_send; then
    # The worker starts once the queue stops growing (every booking is in).
    last=-1
    while :; do
      sleep 1
      now=$(queued)
      if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then break; fi
      last=$now
    done
    "$bin/sub-worker" >"$work/worker.log" 2>&1 & worker_pid=$!
  fi
  status=0
  wait "$load_pid" || status=$?
  worker_cpu=$(cpu_s "$worker_pid")
  pg_cpu=0
  for pid in $(backends_of "$worker_pid"); do
    pg_cpu=$(python3 -c "print($pg_cpu + $(cpu_s "$pid"))")
  done
  # The worker's own account: batches committed and the time spent in commits.
  curl -fs "http://$TICKETNEST_WORKER_HTTP_ADDR/metrics" >"$work/metrics.txt" 2>/dev/null || : >"$work/metrics.txt"
  python3 - "$work/sale.json" "$worker_cpu" "$pg_cpu" "$status" "$run" "$work/metrics.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
worker, pg, status, run = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
metrics = {}
for line in open(sys.argv[6]):
    if line.startswith("ticketnest_worker_batches_total") or line.startswith("ticketnest_worker_commit_duration_seconds_sum"):
        name, value = line.split()[0].split("{")[0], float(line.split()[-1])
        metrics[name] = metrics.get(name, 0.0) + value
batches = metrics.get("ticketnest_worker_batches_total", 0.0)
commit_s = metrics.get("ticketnest_worker_commit_duration_seconds_sum", 0.0)
n = max(r["outcomes"]["decided"], 1)
o = r["outcomes"]
print(f"run {run}: decided {o['decided']} ({o['confirmed']} confirmed, {o['waitlisted']} waitlisted, "
      f"{o['rejected']} rejected)  decide_per_s {r['decide_per_s']:.0f}  "
      f"decide_after_send_per_s {r['decide_after_send_per_s']:.0f} ({r['decided_after_send']})  "
      f"accept_per_s {r['accept_per_s']:.0f}  "
      f"cpu per 100k: worker {worker * 1e5 / n:.2f} s, its PG backends {pg * 1e5 / n:.2f} s  "
      f"batches {batches:.0f}, commit {1000 * commit_s / max(batches, 1):.1f} ms each ({commit_s:.1f} s)  "
      f"{'OK' if r['correct'] else 'BREACHED'} (exit {status})")
PY
  stop_stack
done
