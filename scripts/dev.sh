#!/usr/bin/env bash
# Runs TicketNest locally: PostgreSQL and Redis (started or installed if needed),
# the schema migrated, one pub-api and one sub-worker (release builds). Prints the
# URL and a curl walkthrough, then runs until Ctrl-C.
#
#   scripts/dev.sh            # run until Ctrl-C
#   scripts/dev.sh --smoke    # run the walkthrough itself, check it, and stop
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

scripts/services.sh
# psql below logs in as the role `ticketnest` (password in .dev/pg-password).
. scripts/pg-env.sh
own_url=false
[ -z "${TICKETNEST_DATABASE_URL:-}" ] && own_url=true
export TICKETNEST_DATABASE_URL="${TICKETNEST_DATABASE_URL:-$(pg_url ticketnest)}"
export TICKETNEST_HTTP_ADDR="${TICKETNEST_HTTP_ADDR:-127.0.0.1:8080}"
db_name="${TICKETNEST_DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
owner=$(psql -d postgres -Atq -v db="$db_name" <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'")
if [ -z "$owner" ]; then
  echo "[dev] creating database $db_name"
  psql -d postgres -q -v ON_ERROR_STOP=1 -v db="$db_name" <<<'CREATE DATABASE :"db"'
elif $own_url && [ "$owner" != "$PGUSER" ]; then
  echo "[dev] database $db_name belongs to $owner, not $PGUSER: drop it (as $owner) to start afresh"
  exit 1
fi

cargo build --release --bins
bin=target/release
"$bin/ticketnest-admin" migrate

mkdir -p .dev
"$bin/sub-worker" >.dev/sub-worker.log 2>&1 &
worker=$!
"$bin/pub-api" >.dev/pub-api.log 2>&1 &
api=$!
trap 'kill -TERM $api $worker 2>/dev/null; wait $api $worker 2>/dev/null || true' EXIT INT TERM

url="http://$TICKETNEST_HTTP_ADDR"
for _ in $(seq 150); do
  curl -fs "$url/readyz" >/dev/null 2>&1 && break
  kill -0 $api 2>/dev/null || { echo "[dev] pub-api exited; see .dev/pub-api.log"; exit 1; }
  sleep 0.2
done
curl -fs "$url/readyz" >/dev/null || { echo "[dev] pub-api not ready; see .dev/pub-api.log"; exit 1; }

cat <<EOT

TicketNest is running at $url   (logs: .dev/pub-api.log, .dev/sub-worker.log; Ctrl-C stops both)

Walkthrough (copy and paste):

  # 1. An organizer signs up, is promoted by an operator, logs in and puts a show on sale
  curl -s -XPOST $url/api/auth/signup -H 'content-type: application/json' \\
       -d '{"email":"org@example.com","password":"Orga1zer!","nickname":"org"}'
  $bin/ticketnest-admin user promote org@example.com
  ORG=\$(curl -s -XPOST $url/api/auth/login -H 'content-type: application/json' \\
       -d '{"email":"org@example.com","password":"Orga1zer!"}' | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
  GOODS=\$(curl -s -XPOST $url/api/goods -H "authorization: Bearer \$ORG" -H 'content-type: application/json' \\
       -d '{"title":"Swan Lake","content":"Ballet","price":120000,"imgUrl":"","showDate":"2026-12-24T19:30:00Z","bookingLimit":100}' \\
       | sed -E 's/.*"id":([0-9]+).*/\1/')

  # 2. A fan signs up, logs in, books a seat and polls the request
  curl -s -XPOST $url/api/auth/signup -H 'content-type: application/json' \\
       -d '{"email":"fan@example.com","password":"Fan4ever!","nickname":"fan"}'
  FAN=\$(curl -s -XPOST $url/api/auth/login -H 'content-type: application/json' \\
       -d '{"email":"fan@example.com","password":"Fan4ever!"}' | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
  STATUS_URL=\$(curl -s -XPOST $url/api/goods/\$GOODS/bookings -H "authorization: Bearer \$FAN" \\
       | sed -E 's/.*"statusUrl":"([^"]+)".*/\1/')
  curl -s $url\$STATUS_URL -H "authorization: Bearer \$FAN"
  curl -s $url/api/goods/\$GOODS

EOT

if $smoke; then
  json() { curl -s -H 'content-type: application/json' "$@"; }
  field() { sed -E "s/.*\"$1\":\"?([^\",}]+)\"?.*/\1/"; }
  suffix=$(date +%s%N | tail -c 7)
  json -XPOST "$url/api/auth/signup" -d "{\"email\":\"org$suffix@example.com\",\"password\":\"Orga1zer!\",\"nickname\":\"o$suffix\"}" >/dev/null
  "$bin/ticketnest-admin" user promote "org$suffix@example.com"
  org=$(json -XPOST "$url/api/auth/login" -d "{\"email\":\"org$suffix@example.com\",\"password\":\"Orga1zer!\"}" | field accessToken)
  goods=$(json -XPOST "$url/api/goods" -H "authorization: Bearer $org" \
    -d '{"title":"Smoke","content":"","price":1,"imgUrl":"","showDate":"2026-12-24","bookingLimit":1}' | field id)
  json -XPOST "$url/api/auth/signup" -d "{\"email\":\"fan$suffix@example.com\",\"password\":\"Fan4ever!\",\"nickname\":\"f$suffix\"}" >/dev/null
  fan=$(json -XPOST "$url/api/auth/login" -d "{\"email\":\"fan$suffix@example.com\",\"password\":\"Fan4ever!\"}" | field accessToken)
  status_url=$(curl -s -XPOST "$url/api/goods/$goods/bookings" -H "authorization: Bearer $fan" | field statusUrl)
  for _ in $(seq 100); do
    status=$(curl -s "$url$status_url" -H "authorization: Bearer $fan")
    case "$status" in *'"status":"confirmed"'*) echo "[smoke] $status"; exit 0 ;; esac
    sleep 0.1
  done
  echo "[smoke] booking not confirmed: $status"
  exit 1
fi
wait
