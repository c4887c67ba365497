"""The web processes' Postgres backend under gevent (see ``base``)."""
