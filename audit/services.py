"""Write audit events: one call per action, inside the transaction of the change it records."""

import hashlib
import hmac
import json

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from cxr_portal.keys import MINIMUM_AUDIT_KEY_CHARACTERS

from .context import current_request_context
from .models import AuditEvent, Outcome

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same for every writer of the chain.
CHAIN_LOCK_KEY = 0x0A0D17


def _canonical(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash_payload(event: AuditEvent) -> dict:
    # actor_id is left out: the username/role snapshot carries who it was, also after the user is deleted.
    return {
        "sequence": event.sequence,
        "created_at": event.created_at.isoformat(),
        "actor_username": event.actor_username,
        "actor_role": event.actor_role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "patient_identifier": event.patient_identifier,
        "study_identifier": event.study_identifier,
        "outcome": event.outcome,
        "client_ip": event.client_ip or "",
        "user_agent": event.user_agent,
        "details": event.details,
        "previous_hash": event.previous_hash,
    }


def audit_chain_key() -> bytes:
    """The HMAC key of the chain (``CXR_AUDIT_KEY``), never stored in the database."""
    configured = settings.AUDIT_CHAIN_KEY
    if configured:
        if len(configured) < MINIMUM_AUDIT_KEY_CHARACTERS:
            raise ImproperlyConfigured(f"CXR_AUDIT_KEY must be at least {MINIMUM_AUDIT_KEY_CHARACTERS} characters.")
        return configured.encode("utf-8")
    # Zero-configuration development and tests only: production settings refuse to start without a key.
    return hashlib.sha256(b"cxr-portal audit chain:" + settings.SECRET_KEY.encode("utf-8")).digest()


def keyed_digest(text: str) -> str:
    return hmac.new(audit_chain_key(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def compute_event_hash(event: AuditEvent) -> str:
    """HMAC-SHA256 of the event and the hash before it: without the key a rewritten chain cannot be recomputed."""
    return keyed_digest(_canonical(event_hash_payload(event)))


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    # SQLite serialises writers itself; the unique sequence catches the rest.


def audit_record(
    *,
    action: str,
    actor=None,
    target=None,
    patient=None,
    study=None,
    outcome: str = Outcome.SUCCESS,
    details: dict | None = None,
    username: str = "",
) -> AuditEvent:
    """Append one event. Call it inside the transaction of the change it records."""
    context = current_request_context()
    actor_is_user = actor is not None and getattr(actor, "is_authenticated", False)
    if study is not None and patient is None:
        patient = study.patient
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-sequence").only("sequence", "hash").first()
        event = AuditEvent(
            sequence=(last.sequence + 1) if last else 1,
            created_at=timezone.now(),
            actor=actor if actor_is_user else None,
            actor_username=(actor.get_username() if actor_is_user else username)[:150],
            actor_role=(actor.role_name if actor_is_user else "")[:32],
            action=action,
            object_type=target._meta.label_lower if target is not None else "",
            object_id=str(target.pk) if target is not None else "",
            patient_identifier=patient.mrn if patient is not None else "",
            study_identifier=study.accession_number if study is not None else "",
            outcome=outcome,
            client_ip=context.client_ip,
            user_agent=context.user_agent,
            # Round-trip through JSON so the hashed value is exactly what the database returns.
            details=json.loads(_canonical(details or {})),
            previous_hash=last.hash if last else GENESIS_HASH,
        )
        event.hash = compute_event_hash(event)
        event.save(force_insert=True)
    return event


QUERY_VALUE_MAX_CHARACTERS = 200


def query_for_audit(query) -> dict:
    """The query parameters of a request as the audit trail keeps them (a QueryDict or a plain dict)."""
    items = query.lists() if hasattr(query, "lists") else ((key, [value]) for key, value in query.items())
    kept = {}
    for key, values in items:
        values = [str(value)[:QUERY_VALUE_MAX_CHARACTERS] for value in values]
        kept[str(key)[:QUERY_VALUE_MAX_CHARACTERS]] = values[0] if len(values) == 1 else values
    return kept


def audit_read_many(*, actor, action: str, query: dict, study_identifiers=(), patient_identifiers=(),
                    details: dict | None = None) -> AuditEvent:
    """One event for a list, search or export: what was asked and which patients and studies came back.

    DICOM PS3.15 A.5 names every participant of a Query or Export event; here their accession numbers
    and MRNs, so an auditor can find every list that showed a patient (audit_events_filtered does).
    """
    # Events that name no study or patient (blank identifiers) add nothing to find.
    studies = sorted(set(filter(None, study_identifiers)))
    patients = sorted(set(filter(None, patient_identifiers)))
    return audit_record(actor=actor, action=action, details={
        "query": query, "studies": studies, "patients": patients, "count": len(studies) or len(patients),
        **(details or {}),
    })
