"""The audit trail is append-only in the database and its hash chain shows any tampering."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import GENESIS_HASH, audit_record


def record_events(count: int) -> list[AuditEvent]:
    return [audit_record(action="test.event", details={"number": number}) for number in range(count)]


def run_sql(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


class guard_disabled:
    """Switch triggers off for this session, as a database superuser could."""

    def __enter__(self):
        run_sql("SET session_replication_role = replica")

    def __exit__(self, *exc):
        run_sql("SET session_replication_role = DEFAULT")


@pytest.mark.django_db
def test_events_chain_from_genesis():
    first, second, third = record_events(3)
    assert (first.sequence, second.sequence, third.sequence) == (1, 2, 3)
    assert first.previous_hash == GENESIS_HASH
    assert second.previous_hash == first.hash and third.previous_hash == second.hash
    result = audit_chain_verify()
    assert result.valid and result.checked == 3


@pytest.mark.django_db
def test_sql_update_of_an_audit_row_is_refused():
    event = record_events(1)[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        run_sql("UPDATE audit_auditevent SET action = 'nothing.happened' WHERE id = %s", [event.id])
    event.refresh_from_db()
    assert event.action == "test.event"


@pytest.mark.django_db
def test_sql_delete_of_an_audit_row_is_refused():
    event = record_events(1)[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [event.id])
    assert AuditEvent.objects.filter(id=event.id).exists()


@pytest.mark.django_db
def test_orm_update_and_delete_are_refused_too():
    event = record_events(1)[0]
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).update(outcome="denied")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(id=event.id).delete()


@pytest.mark.django_db
def test_deleting_a_user_keeps_their_events_and_the_chain(clinician):
    audit_record(actor=clinician, action="test.event")
    clinician.delete()
    event = AuditEvent.objects.get(action="test.event")
    assert event.actor_username == "dr_ana" and event.actor_role == "clinician"
    assert audit_chain_verify().valid


@pytest.mark.django_db
def test_verify_names_an_edited_event():
    events = record_events(5)
    with guard_disabled():
        run_sql("UPDATE audit_auditevent SET details = '{\"number\": 99}' WHERE id = %s", [events[2].id])
    result = audit_chain_verify()
    assert result.first_broken_sequence == 3
    assert result.finding == "edited" and "edited" in result.reason
    assert result.checked == 2


@pytest.mark.django_db
def test_verify_names_an_edit_that_also_recomputed_the_hash():
    """Rewriting an event and its own hash still breaks the link to the next event."""
    from audit.services import compute_event_hash

    events = record_events(5)
    forged = AuditEvent.objects.get(id=events[1].id)
    forged.action = "nothing.happened"
    forged.hash = compute_event_hash(forged)
    with guard_disabled():
        run_sql("UPDATE audit_auditevent SET action = %s, hash = %s WHERE id = %s", [forged.action, forged.hash, forged.id])
    result = audit_chain_verify()
    assert result.first_broken_sequence == 3
    assert "previous_hash" in result.reason


@pytest.mark.django_db
def test_verify_names_the_event_after_a_deleted_one():
    events = record_events(5)
    with guard_disabled():
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [events[1].id])
    result = audit_chain_verify()
    assert result.first_broken_sequence == 3
    assert "removed or reordered" in result.reason


@pytest.mark.django_db
def test_verify_names_the_first_of_two_reordered_events():
    events = record_events(5)
    second, third = events[1], events[2]
    with guard_disabled():
        run_sql("UPDATE audit_auditevent SET sequence = -1 WHERE id = %s", [second.id])
        run_sql("UPDATE audit_auditevent SET sequence = 2 WHERE id = %s", [third.id])
        run_sql("UPDATE audit_auditevent SET sequence = 3 WHERE id = %s", [second.id])
    result = audit_chain_verify()
    assert result.first_broken_sequence == 2


@pytest.mark.django_db
def test_audit_verify_command_reports_intact_and_broken_chains():
    events = record_events(4)
    call_command("audit_verify")
    with guard_disabled():
        run_sql("UPDATE audit_auditevent SET client_ip = '10.6.6.6' WHERE id = %s", [events[3].id])
    with pytest.raises(CommandError, match="broken at event #4"):
        call_command("audit_verify")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_eight_concurrent_writers_leave_a_valid_chain():
    writers, events_each = 8, 25
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            start.wait()
            for number in range(events_each):
                with transaction.atomic():
                    audit_record(action="test.concurrent", details={"writer": writer, "number": number})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert AuditEvent.objects.filter(action="test.concurrent").count() == writers * events_each
    result = audit_chain_verify()
    assert result.valid, result.reason
    assert result.checked == writers * events_each
