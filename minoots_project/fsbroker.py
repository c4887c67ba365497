"""kombu's filesystem transport with atomic message files: the embedded broker of ``make run``.

kombu's ``filesystem`` transport opens a message file under its final ``*.msg`` name and only
then writes the payload. A worker polling the folder can move and read the file in between: it
gets an empty payload, dies with ``Unrecoverable error: JSONDecodeError`` (which stops all of
``make run``), and the message is lost (celery/kombu#1551,
https://github.com/celery/kombu/issues/1551). Here the payload goes to a name the consumer
ignores and is renamed into place, atomic within one directory, so a consumer only ever sees
whole messages.
A file that still cannot be decoded (a crash mid-write) is dropped with a warning instead of
killing the worker; the reconciler re-publishes whatever a lost message was for.

The exchange files of the control folder have the same race when processes starting together
declare the same queue (one creates the file empty, another reads it): here the file is first
created whole, as ``[]``, through a hard link, so kombu always finds a readable table.
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        file = self._exchange_file(exchange)  # type: ignore[attr-defined]  # kombu's private helper
        if not file.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            partial = file.with_name(f"{file.name}.{uuid.uuid4().hex}.tmp")
            partial.write_bytes(b"[]")
            try:
                os.link(partial, file)  # atomic; fails if another process got there first
            except FileExistsError:
                pass
            finally:
                partial.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu passes extra kwargs
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Ends in ".tmp", so kombu's _get (which wants "<queue>.msg") skips it.
        partial = final + ".tmp"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        while True:  # kombu's _get raises Empty when no file is left
            try:
                return super()._get(queue)
            except ValueError:  # JSONDecodeError; kombu has already removed the file
                logger.warning("dropped an unreadable message file from broker queue %s", queue)


class Transport(filesystem.Transport):
    Channel = Channel
