# gunicorn's configuration file: `gunicorn -c minoots_project/gunicorn.conf.py minoots_project.wsgi`
# (make run, the Dockerfile and compose.yaml). The settings are in gunicorn_conf.py; this file
# only makes sure gevent patches the standard library before anything else is imported.
#
# The web workers are gevent workers. gevent must patch threading, sockets and friends before
# Django is imported: Django keeps each thread's database connection in a threading.local made
# at import time, and gunicorn imports this configuration (and with it the minoots_project
# package: Django settings, Celery app) in the master, before it forks the workers and before
# gunicorn's worker patches. Imported unpatched, every greenlet of a worker would share one
# database connection. gunicorn loads a configuration given as a file path without importing
# its package first, so this line runs first.
from gevent import monkey

monkey.patch_all()

from minoots_project.gunicorn_conf import *  # noqa: E402, F403
