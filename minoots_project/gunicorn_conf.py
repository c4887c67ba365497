"""gunicorn settings for the web process: ``gunicorn -c python:minoots_project.gunicorn_conf minoots_project.wsgi``.

Used by ``runall`` (``make run``), the Dockerfile and compose.yaml. Every value comes from the
environment (and ``.env``), like the Django settings. gunicorn's own error and access logs go
through the same formatters as Django's, so LOG_FORMAT=json gives JSON lines here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

from minoots_project.logconfig import build_logging

_DOTENV = Path(__file__).resolve().parent.parent / ".env"
if _DOTENV.exists():
    environ.Env.read_env(_DOTENV, overwrite=False)

# Loopback by default (a trial `make run` is not exposed to the network); the container image
# sets BIND_HOST=0.0.0.0.
bind = f"{os.environ.get('BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Each worker process serves `threads` requests at a time; the event stream holds one thread
# per open connection, so threads rather than sync workers.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
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
