#!/usr/bin/env bash
# Run the test suite against the local Postgres and Redis, in their own database and Redis db.
#
# With no arguments (what `make test` and CI run) the whole suite runs twice: first on SQLite,
# the embedded default's database, then on Postgres. The SQLite test database is a file under
# MINOOTS_DATA_DIR, so the worker, beat and web processes of the end-to-end tests open the
# database the test writes (tests/conftest.py); tests marked `postgres_only` are deselected there.
# Tests that do not depend on the database run once: `once_on_postgres` ones are deselected from
# the SQLite run, `once_on_sqlite` ones (e.g. the browser test, `make run`'s own embedded stack)
# from the Postgres run (markers in pyproject.toml).
#
# With arguments, pytest runs once with them, on MINOOTS_TEST_DATABASE_URL (default: the local
# Postgres), e.g.
#   MINOOTS_TEST_DATABASE_URL=sqlite:///$PWD/.data/test/sqlite-test.db bash scripts/test.sh -q tests/timers/test_engine.py
# Concurrent runs need their own MINOOTS_TEST_DATABASE_URL, MINOOTS_TEST_DATA_DIR and
# MINOOTS_TEST_BROKER_URL (Redis db); pytest-django prefixes the database name with test_.
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
  echo "== Full suite on SQLite (embedded default) and Redis, without the postgres_only tests =="
  DATABASE_URL="sqlite:///$MINOOTS_DATA_DIR/sqlite-test.db" run_pytest -q -m "not postgres_only and not once_on_postgres" || exit $?
  echo "== Full suite on Postgres and Redis, without the once_on_sqlite tests =="
  set -- -m "not once_on_sqlite"
fi
export DATABASE_URL=${MINOOTS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/minoots}
run_pytest "$@"
