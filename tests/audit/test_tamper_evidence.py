"""Tampering by whoever owns the database is caught: a keyed chain, anchors outside the database,
and an application role that may only read and append.

The roles are created inside each test's transaction (PostgreSQL roles are transactional), so the
rollback at the end of the test removes them; names carry the process id so parallel runs never meet.
"""

import hashlib
import json
import os

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from audit.anchors import AuditChainBroken, audit_chain_anchor
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import GENESIS_HASH, audit_record, compute_event_hash, event_hash_payload

pytestmark = pytest.mark.django_db


def run_sql(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def record_events(count: int) -> list[AuditEvent]:
    return [audit_record(action="test.event", details={"number": number}) for number in range(count)]


@pytest.fixture
def owner_role():
    """A role that owns the audit table, as the migrations' role does in production (not a superuser)."""
    name = f"cxr_owner_test_{os.getpid()}"
    run_sql(f'CREATE ROLE "{name}" NOLOGIN')
    run_sql(f'ALTER TABLE audit_auditevent OWNER TO "{name}"')
    run_sql(f'GRANT USAGE, SELECT ON SEQUENCE audit_auditevent_id_seq TO "{name}"')
    return name


@pytest.fixture
def app_role():
    name = f"cxr_app_test_{os.getpid()}"
    run_sql(f'CREATE ROLE "{name}" NOLOGIN')
    call_command("grant_app_role", name)
    return name


class acting_as:
    """SET ROLE for a block; a failure inside rolls the savepoint back, and the role with it."""

    def __init__(self, role: str):
        self.role = role

    def __enter__(self):
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        run_sql(f'SET ROLE "{self.role}"')

    def __exit__(self, *exc):
        if exc[0] is None:
            run_sql("RESET ROLE")
        return self.atomic.__exit__(*exc)


def rewrite_as_owner(owner: str, sql: str, params=()) -> None:
    with acting_as(owner):
        run_sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        run_sql(sql, params)
        run_sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def rechain_from(sequence: int, digest) -> None:
    """Recompute previous_hash and hash of every event from `sequence` on, with `digest(event)`."""
    previous = AuditEvent.objects.get(sequence=sequence - 1).hash if sequence > 1 else GENESIS_HASH
    for event in AuditEvent.objects.filter(sequence__gte=sequence).order_by("sequence"):
        event.previous_hash = previous
        event.hash = digest(event)
        run_sql("UPDATE audit_auditevent SET previous_hash = %s, hash = %s WHERE id = %s", [event.previous_hash, event.hash, event.id])
        previous = event.hash


def unkeyed_hash(event: AuditEvent) -> str:
    """What the chain was before it was keyed: anyone could recompute it."""
    payload = json.dumps(event_hash_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def test_chain_hashes_are_keyed_with_the_audit_key(settings):
    event = record_events(1)[0]
    settings.AUDIT_CHAIN_KEY = "another-audit-key-of-at-least-32-characters"
    assert compute_event_hash(event) != event.hash


def test_owner_rewrite_and_rechain_without_the_key_is_found(owner_role):
    record_events(6)
    with acting_as(owner_role):
        run_sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        run_sql("UPDATE audit_auditevent SET action = 'nothing.happened' WHERE sequence = 3")
        rechain_from(3, unkeyed_hash)
        run_sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    result = audit_chain_verify()
    assert result.finding == "edited" and result.first_broken_sequence == 3
    with pytest.raises(CommandError, match=r"broken at event #3 \[edited\]"):
        call_command("audit_verify")


def test_rechain_with_the_stolen_key_is_found_by_the_anchors(owner_role):
    record_events(6)
    audit_chain_anchor()
    with acting_as(owner_role):
        run_sql("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        run_sql("UPDATE audit_auditevent SET action = 'nothing.happened' WHERE sequence = 3")
        rechain_from(3, compute_event_hash)
        run_sql("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    result = audit_chain_verify()
    assert result.finding == "rewritten" and result.first_broken_sequence == 6
    assert "anchor written at" in result.reason


def test_deleted_tail_events_are_found(owner_role):
    record_events(6)
    audit_chain_anchor()
    rewrite_as_owner(owner_role, "DELETE FROM audit_auditevent WHERE sequence > 4")
    result = audit_chain_verify()
    assert result.finding == "tail_deleted" and result.first_broken_sequence == 5
    assert "events #5 to #6" in result.reason
    with pytest.raises(CommandError, match=r"\[tail_deleted\]"):
        call_command("audit_verify")


def test_truncation_is_found(owner_role):
    record_events(4)
    audit_chain_anchor()
    with acting_as(owner_role):
        run_sql("TRUNCATE audit_auditevent")
    result = audit_chain_verify()
    assert result.finding == "truncated" and "recorded 4 events" in result.reason
    with pytest.raises(CommandError, match=r"\[truncated\]"):
        call_command("audit_verify")


def test_truncation_followed_by_new_events_is_found(owner_role):
    record_events(4)
    audit_chain_anchor()
    with acting_as(owner_role):
        run_sql("TRUNCATE audit_auditevent")
    record_events(5)
    result = audit_chain_verify()
    assert result.finding == "rewritten" and result.first_broken_sequence == 4


def test_a_broken_chain_is_never_anchored(owner_role, audit_anchor_file):
    record_events(3)
    audit_chain_anchor()
    record_events(2)
    rewrite_as_owner(owner_role, "UPDATE audit_auditevent SET outcome = 'denied' WHERE sequence = 5")
    lines_before = audit_anchor_file.read_text().count("\n")
    with pytest.raises(AuditChainBroken, match="event #5"):
        audit_chain_anchor()
    assert audit_anchor_file.read_text().count("\n") == lines_before


def test_anchor_command_appends_only_when_the_head_moved(audit_anchor_file):
    record_events(2)
    call_command("audit_anchor")
    call_command("audit_anchor")
    record_events(1)
    call_command("audit_anchor")
    anchored = [json.loads(line)["sequence"] for line in audit_anchor_file.read_text().splitlines()]
    assert anchored == [2, 3]
    call_command("audit_verify")


def test_an_edited_anchor_line_is_found(audit_anchor_file):
    record_events(3)
    audit_chain_anchor()
    line = json.loads(audit_anchor_file.read_text())
    line["sequence"] = 2
    audit_anchor_file.write_text(json.dumps(line) + "\n")
    result = audit_chain_verify()
    assert result.finding == "anchor_forged" and "line(s) 1" in result.reason


def test_anchor_task_is_scheduled(settings):
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "audit.anchor_chain_head" in schedule


def test_app_role_reads_and_appends(app_role):
    record_events(2)
    with acting_as(app_role):
        audit_record(action="test.as_app")
        assert AuditEvent.objects.count() == 3
    assert audit_chain_verify().valid


@pytest.mark.parametrize("attack", [
    "UPDATE audit_auditevent SET action = 'nothing.happened'",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
    "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
    "DROP TRIGGER audit_event_append_only ON audit_auditevent",
    "SET session_replication_role = replica",
    "DROP TABLE audit_auditevent",
    "CREATE TABLE audit_shadow (id int)",
    "DELETE FROM django_migrations",
])
def test_app_role_cannot_touch_the_audit_trail(app_role, attack):
    record_events(2)
    with pytest.raises(DatabaseError, match="permission denied|must be owner|must be superuser"), acting_as(app_role):
        run_sql(attack)
    assert AuditEvent.objects.count() == 2 and audit_chain_verify().valid


def test_app_role_still_runs_the_portal(app_role, clinician):
    """Deleting a user with events must not need UPDATE on the audit table."""
    audit_record(actor=clinician, action="test.event")
    with acting_as(app_role):
        run_sql("UPDATE accounts_user SET first_name = 'Ana' WHERE id = %s", [clinician.id])
        clinician.delete()
    assert AuditEvent.objects.get(action="test.event").actor_username == "dr_ana"


def test_grant_app_role_refuses_the_owner(owner_role):
    with pytest.raises(CommandError, match="owns the tables"):
        call_command("grant_app_role", owner_role)
