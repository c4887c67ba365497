# One image for every MINOOTS process: web (the default command), worker, beat and migrate
# (see compose.yaml for their commands).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MINOOTS_DATA_DIR=/var/lib/minoots \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000 \
    BIND_HOST=0.0.0.0

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected into the image: gunicorn serves them through WhiteNoise.
# The metrics directory exists in the image so a named volume mounted there starts with the
# right owner (Docker copies ownership into an empty named volume).
RUN useradd --system --uid 10001 --home-dir /var/lib/minoots minoots \
 && mkdir -p /var/lib/minoots/metrics \
 && chown -R minoots /var/lib/minoots \
 && MINOOTS_DATA_DIR=/tmp/build SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0 \
 && rm -rf /tmp/build

USER minoots
EXPOSE 8000
CMD ["gunicorn", "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"]
