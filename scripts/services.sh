#!/usr/bin/env bash
# Makes sure a local PostgreSQL and Redis are running on their standard ports,
# installing them from Debian's packages and starting them when needed, and that the
# PostgreSQL role `ticketnest` exists with the password in .dev/pg-password.
# Idempotent: run it as often as you like.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

log() { printf '[services] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "gave up waiting for $what after ${secs}s"
  return 1
}

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# HAProxy: the distributed test puts two pub-api copies behind a real one.
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# A TrueType font for ticketnest-load's PNG/SVG plots.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# Prometheus: the dashboard test (crates/sub-worker/tests/it/dashboard.rs) runs
# /usr/bin/prometheus (and promtool) as child processes against deploy/prometheus.yml.
# Only the binaries are wanted, not a system service (see below).
installing_prometheus=false
[ -x /usr/bin/prometheus ] || installing_prometheus=true
if [ "${#missing[@]}" -gt 0 ] || [ "$installing_prometheus" = true ]; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$installing_prometheus" = true ]; then
  log "installing prometheus"
  # No recommends: they would add prometheus-node-exporter, a second daemon.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
fi
# Debian's package enables and starts a system Prometheus on :9090 (where init scripts
# run at all). Nothing here uses it: the test starts its own on a free port, and a local
# one against deploy/prometheus.yml (README, "Observability") wants :9090 free. Stopped
# and disabled only right after this script installed it: one set up on purpose is left
# alone.
if [ "$installing_prometheus" = true ]; then
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

# PostgreSQL
if ! pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "PostgreSQL" 30 pg_isready -h "$PG_HOST" -p "$PG_PORT" -q
fi
# The role TicketNest's scripts, benches and tests log in as: `ticketnest`, LOGIN and
# CREATEDB, never superuser (it owns the databases it creates, which is all it needs).
# Its password is in .dev/pg-password (random, mode 600, git-ignored); each run makes
# sure the role can log in with it, creating or updating the role only when not. pg_hba.conf is never touched: the role is
# set up through the `postgres` account, over TCP where loopback trusts it (a test
# machine), else as the postgres OS user over the Unix socket (peer auth, Debian's
# default), and then has to log in with its password over TCP like the apps do.
PG_ROLE=ticketnest
root_dir=$(cd "$(dirname "$0")/.." && pwd)
pw_file="$root_dir/.dev/pg-password"
# Settings a caller's shell may carry (scripts/pg-env.sh exports the role's) must not
# steer the connections made as postgres below.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGPASSWORD PGDATABASE PGSERVICE PGPASSFILE PGSSLMODE

as_postgres_psql() { # psql as the superuser `postgres` on the maintenance database
  if psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
  elif [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- psql -w -p "$PG_PORT" -d postgres "$@")
  else
    (cd / && sudo -u postgres psql -w -p "$PG_PORT" -d postgres "$@")
  fi
}

mkdir -p "$root_dir/.dev"
# One run at a time sets up the password and the role (dev.sh and test.sh may start
# together on a fresh clone).
exec 9>"$root_dir/.dev/services.lock"
flock 9
if [ -e "$pw_file" ] && [ ! -O "$pw_file" ]; then
  log "$pw_file belongs to another user (was this script run with sudo?); remove it or"
  log "run the tests and scripts as its owner"
  exit 1
fi
if [ ! -s "$pw_file" ]; then
  log "creating a password for the PostgreSQL role $PG_ROLE in .dev/pg-password"
  random=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 4096 /dev/urandom))
  [ "${#random}" -ge 32 ] || { log "could not read enough random bytes from /dev/urandom"; exit 1; }
  rm -f "$pw_file.tmp"
  (umask 077 && printf '%s\n' "${random:0:32}" >"$pw_file.tmp" && mv "$pw_file.tmp" "$pw_file")
fi
chmod 600 "$pw_file"
pg_password=$(cat "$pw_file")
# Alphanumeric only: it goes into URLs and psql scripts unescaped.
if ! [[ "$pg_password" =~ ^[A-Za-z0-9]{16,}$ ]]; then
  log "$pw_file must hold one line of 16 or more letters and digits; delete it to get a new one"
  exit 1
fi

# The password goes through psql's standard input, never its command line (which
# every local user can read in /proc), and into statements as a quoted psql variable.
set_role() {
  printf '\\set password %s\n' "$pg_password"
  cat <<'EOSQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS missing \gset
\if :missing
CREATE ROLE :"role" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'password';
\else
ALTER ROLE :"role" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'password';
\endif
EOSQL
}
role_login() {
  PGPASSWORD=$pg_password psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d postgres \
    -Atqc 'SELECT 1' >/dev/null 2>&1
}
# Set up only when the role cannot log in with the file's password: a working role is
# left as it is.
if ! role_login && ! set_role | as_postgres_psql -v ON_ERROR_STOP=1 -v role="$PG_ROLE" -Atq >/dev/null; then
  log "could not create or update the PostgreSQL role $PG_ROLE as postgres (tried TCP on"
  log "$PG_HOST:$PG_PORT, then the postgres OS user over the Unix socket)"
  exit 1
fi
if ! role_login; then
  log "PostgreSQL refuses a TCP login as $PG_ROLE with the password in .dev/pg-password:"
  log "its pg_hba.conf must allow password logins (scram-sha-256 or md5, as Debian's default"
  log "does) from $PG_HOST; this script does not change it"
  exit 1
fi

# Redis (nothing on disk: a development and test instance)
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "Redis" 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
fi
log "PostgreSQL on $PG_HOST:$PG_PORT (role $PG_ROLE, password in .dev/pg-password) and Redis on 127.0.0.1:$REDIS_PORT are up"
