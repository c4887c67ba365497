#!/usr/bin/env bash
# Run the test suite against the local Postgres and Redis, in their own database and Redis db.
# With no arguments (what `make test` and CI run) the API tests run first on SQLite too, the
# embedded default's database, so a query that only Postgres accepts cannot slip through.
set -u
cd "$(dirname "$0")/.."
export CELERY_BROKER_URL=${MINOOTS_TEST_BROKER_URL:-redis://127.0.0.1:6379/15}
export SECRET_KEY=${SECRET_KEY:-test-secret-key-not-for-production}
export MINOOTS_DATA_DIR=${MINOOTS_TEST_DATA_DIR:-$PWD/.data/test}
unset PROMETHEUS_MULTIPROC_DIR

run_pytest() {
  .venv/bin/python -m pytest "$@"
  local status=$?
  if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no tests" >&2
    return 1
  fi
  return "$status"
}

if [ "$#" -eq 0 ]; then
  mkdir -p "$MINOOTS_DATA_DIR"
  echo "== API tests on SQLite (embedded default) =="
  DATABASE_URL="sqlite:///$MINOOTS_DATA_DIR/sqlite-test.db" run_pytest -q tests/timers/test_api_*.py || exit $?
  echo "== Full suite on Postgres and Redis =="
fi
export DATABASE_URL=${MINOOTS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/minoots}
run_pytest "$@"
