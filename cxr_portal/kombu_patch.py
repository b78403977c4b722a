"""Keep a Celery worker alive when Redis drops while it holds a task (celery 5.7.0, kombu 5.7.0, redis-py 8.1.0).

What happens without this: on a lost connection, celery 5.7.0's Consumer.on_connection_error_after_connected
calls ``connection.collect()`` and then, new in 5.7.0, ``connection.close()``. collect() closes the redis
channel, but kombu's Channel.close first reads the pending BRPOP reply (kombu PR #1733), that read raises a
connection error, and the channel is left half-closed while collect() goes on to release the transport
(``transport.client = None``). close() then closes the same channel again; it now restores the unacknowledged
message through the released transport, ``_connparams`` reads ``None.hostname``, and the AttributeError, not
being a connection error, escapes to the worker: "Unrecoverable error", exit. celery 5.6.3 did not call close()
and survives; this restores that behaviour without changing versions.

The fix: once collect() has released the transport, closing the connection again leaves its channel alone.
Nothing is lost by not restoring from here: the message stays in Redis's unacked set (restored after the
visibility timeout) and PostgreSQL's sweeper rings the bell for the study anyway.
Remove when celery or kombu fixes the double close (tests/test_worker_survives_broker_outage.py tells).
"""

from kombu import Connection

_close_connection_and_channels = Connection._do_close_self


def _do_close_self(self):
    if self._transport is None and self._default_channel is not None:
        # collect() already released the transport: this channel cannot talk to Redis any more.
        self._default_channel = None
    return _close_connection_and_channels(self)


Connection._do_close_self = _do_close_self
