"""Keep a prefork worker alive when one of its pool processes is killed while it starts (celery 5.7.0, billiard 4.3.2).

What happens without this: the worker starts its pool processes, then connects to Redis, waits a second for
its neighbours (mingle) and only then enters its event loop. Just before the loop, celery's asynloop asks
``pool.did_start_ok()`` once, and billiard answers "no pool process has exited yet". Any pool process that dies
in those 1-3 s, for whatever reason, makes the worker stop with "Unrecoverable error:
WorkerLostError('Could not start worker processes')"; a second later the event loop would have replaced it
like any other pool process that dies. The question is meant for pool processes that cannot start (their
initialiser fails and they exit by themselves: celery issue #7233), not for one the OOM killer, an operator
or an orchestrator killed.

The fix: a pool process killed by SIGKILL or SIGTERM before the loop starts is replaced at once, as the loop
would replace it; one that exited by itself or crashed on its own signal still stops the worker, as before.
Remove when celery or billiard asks only whether pool processes could start
(tests/test_worker_survives_pool_process_killed_at_start.py tells).
"""

import signal

from billiard.pool import Pool

KILLED_FROM_OUTSIDE = {-signal.SIGKILL, -signal.SIGTERM}

_no_pool_process_has_exited = Pool.did_start_ok


def did_start_ok(self):
    exit_codes = [process.exitcode for process in self._pool if process.exitcode is not None]
    if exit_codes and all(code in KILLED_FROM_OUTSIDE for code in exit_codes):
        # Reap and replace them now (logging "Process ... exited with 'signal 9 (SIGKILL)'"), as the loop would.
        self.maintain_pool()
    return _no_pool_process_has_exited(self)


Pool.did_start_ok = did_start_ok
