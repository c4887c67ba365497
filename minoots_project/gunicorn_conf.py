"""gunicorn settings for the web process, read through ``minoots_project/gunicorn.conf.py``.

Used by ``runall`` (``make run``), the Dockerfile and compose.yaml. Every value comes from the
environment (and ``.env``), like the Django settings. gunicorn's own error and access logs go
through the same formatters as Django's, so LOG_FORMAT=json gives JSON lines here too.

Workers are gevent workers: each client connection is a greenlet, not a thread, so slow or idle
clients (a header byte every few seconds, an open event stream) cost a little memory and no
request slot; up to GUNICORN_WORKER_CONNECTIONS connections per process. gunicorn gives a client
GUNICORN_KEEPALIVE seconds to send a whole request head (request line and headers; the same
limit as for an idle keep-alive connection) and closes the connection after that, so dripped
headers cannot hold even a greenlet for long. psycopg2 is made cooperative (psycogreen) in each
worker, and the workers share a bounded pool of Postgres connections (minoots_project/greendb).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import environ

from minoots_project.logconfig import build_logging
from minoots_project.priority import yield_nice

_DOTENV = Path(__file__).resolve().parent.parent / ".env"
if _DOTENV.exists():
    environ.Env.read_env(_DOTENV, overwrite=False)

# Loopback by default (a trial `make run` is not exposed to the network); the container image
# sets BIND_HOST=0.0.0.0.
bind = f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): two
# instances on one machine would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
logconfig_dict = build_logging(
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    fmt=os.environ.get("LOG_FORMAT", "text").lower(),
    gunicorn=True,
)


# MINOOTS_YIELD_NICE is checked here, in the master: a bad value refuses to start instead of
# failing in every worker gunicorn would start again and again.
yield_nice()


def post_fork(server: Any, worker: Any) -> None:
    """psycopg2 waits through gevent's hub, so a query blocks its greenlet, not the process;
    the worker yields the CPU to the firing worker (minoots_project/priority.py)."""
    from psycogreen.gevent import patch_psycopg

    from minoots_project.priority import yield_to_firing

    patch_psycopg()
    yield_to_firing("web")
