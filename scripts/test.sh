#!/usr/bin/env bash
# Run the test suite against the local Postgres and Redis, in their own database and Redis db.
set -u
cd "$(dirname "$0")/.."
export DATABASE_URL=${MINOOTS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/minoots}
export CELERY_BROKER_URL=${MINOOTS_TEST_BROKER_URL:-redis://127.0.0.1:6379/15}
export SECRET_KEY=${SECRET_KEY:-test-secret-key-not-for-production}
export MINOOTS_DATA_DIR=${MINOOTS_TEST_DATA_DIR:-$PWD/.data/test}
unset PROMETHEUS_MULTIPROC_DIR
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
