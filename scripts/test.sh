#!/usr/bin/env bash
# Runs every test of the workspace against a real local PostgreSQL and Redis
# (started or installed first if needed). Extra arguments go to cargo nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
profile=default
[ "${CI:-}" = "true" ] && profile=ci
exec cargo nextest run --workspace --profile "$profile" "$@"
