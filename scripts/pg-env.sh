# Sourced (not run) by the scripts and benches, after scripts/services.sh: connection
# settings of the local PostgreSQL role `ticketnest`, whose password services.sh keeps
# in .dev/pg-password. Exports PGHOST, PGPORT, PGUSER and PGPASSWORD, so psql and
# pgbench log in as the role with no password on their command line, and defines
# `pg_url DB`, the role's URL of database DB (for TICKETNEST_DATABASE_URL).
# shellcheck shell=bash
pg_password_file="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.dev/pg-password"
[ -r "$pg_password_file" ] || { echo "missing $pg_password_file: run scripts/services.sh" >&2; exit 1; }
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=ticketnest
PGPASSWORD=$(cat "$pg_password_file")
export PGPASSWORD
# The password is alphanumeric (services.sh makes sure), so it needs no URL escaping.
pg_url() { printf 'postgres://%s:%s@%s:%s/%s' "$PGUSER" "$PGPASSWORD" "$PGHOST" "$PGPORT" "$1"; }
