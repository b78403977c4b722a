"""Workers keep their PostgreSQL connection between tasks, and drop a broken one before the next task."""

from types import SimpleNamespace

import pytest
from django.db import connection

from cxr_portal.celery import app, database_connections_checked


def _task(*, eager: bool):
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def test_celery_does_not_close_the_connection_after_every_task():
    # Without it, Celery's Django fixup closes every connection after every task (a new backend per film).
    assert app.conf.get("CELERY_DB_REUSE_MAX", 0) >= 100


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_healthy_connection_is_kept_across_tasks(monkeypatch):
    connection.ensure_connection()
    # As production's CONN_MAX_AGE does (the tests' settings close after every request): not expired yet.
    monkeypatch.setattr(connection, "close_at", None)
    backend = connection.connection
    database_connections_checked(task=_task(eager=False))
    connection.ensure_connection()
    assert connection.connection is backend


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_connection_broken_by_a_database_restart_is_replaced_before_the_next_task():
    connection.ensure_connection()
    broken = connection.connection
    broken.close()  # what a PostgreSQL restart leaves behind
    connection.errors_occurred = True
    database_connections_checked(task=_task(eager=False))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not broken


@pytest.mark.django_db
def test_a_task_run_eagerly_leaves_the_callers_connection_alone():
    backend = connection.connection
    database_connections_checked(task=_task(eager=True))
    assert connection.connection is backend and connection.in_atomic_block
