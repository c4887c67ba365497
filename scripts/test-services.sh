#!/usr/bin/env bash
# Make sure the local Postgres and Redis the tests use are up (start them if installed but
# stopped) and that Debian's chromium is there for the browser test (install it when missing);
# fail with a clear message naming what is missing.
set -u
PGHOST=${MINOOTS_TEST_PGHOST:-127.0.0.1}
PGPORT=${MINOOTS_TEST_PGPORT:-5432}
REDIS_PORT=${MINOOTS_TEST_REDIS_PORT:-6379}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do port_open "$1" "$2" && return 0; sleep 0.2; done
  return 1
}

if ! port_open "$PGHOST" "$PGPORT"; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "Postgres is stopped; starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_port "$PGHOST" "$PGPORT" || {
    echo "ERROR: PostgreSQL is not reachable on $PGHOST:$PGPORT and could not be started (is it installed? apt-get install postgresql)" >&2
    exit 1
  }
fi

if ! port_open 127.0.0.1 "$REDIS_PORT"; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is stopped; starting it" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  fi
  wait_port 127.0.0.1 "$REDIS_PORT" || {
    echo "ERROR: Redis is not reachable on 127.0.0.1:$REDIS_PORT and could not be started (is it installed? apt-get install redis-server)" >&2
    exit 1
  }
fi

# The browser test (tests/browser) drives Debian's chromium; install it quietly when missing
# (as root, the way CI and the developers' machines run; otherwise say what to run). Never
# playwright's own browser downloads.
CHROMIUM=${MINOOTS_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing (the browser test needs it); installing Debian's package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium; }
    { apt_install || { apt-get -o DPkg::Lock::Timeout=300 update -qq && apt_install; }; } >/dev/null 2>&1
  fi
  [ -x "$CHROMIUM" ] || {
    echo "ERROR: $CHROMIUM is missing and could not be installed (apt-get install chromium)" >&2
    exit 1
  }
fi
