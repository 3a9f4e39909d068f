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
# schemathesis from PyPI, pinned, in a venv under .dev/: crates/pub-api/tests/api/openapi.rs
# runs it against a live API and worker (it fails under CI=true without it). Installed
# once; later runs only ask it for its version.
SCHEMATHESIS_VERSION=4.32.5
venv=.dev/venv
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  echo "[test] installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  mkdir -p .dev
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi
export TICKETNEST_SCHEMATHESIS="$PWD/$venv/bin/schemathesis"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
exec cargo nextest run --workspace --profile "$profile" "$@"
