"""A bare Django + DRF insert endpoint: the create case's baseline (``bench/timers.py --cases create``).

What a Django project fresh from ``startproject`` with DRF added would serve for "validate a small
body, insert one row": one APIView, one serializer, one model in the same Postgres, Django's own
Postgres backend with persistent connections, startproject's middleware. The bench serves it
with MINOOTS' gunicorn configuration (``minoots_project/gunicorn.conf.py``: gevent workers,
WEB_CONCURRENCY processes, keepalive, psycopg2 made cooperative), so the two differ only in the
application.
"""
