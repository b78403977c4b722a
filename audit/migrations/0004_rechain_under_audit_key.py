"""Re-chain the events written before the chain was keyed: plain SHA-256 becomes HMAC-SHA256 under CXR_AUDIT_KEY.

The old chain is verified first and the migration stops if it is broken: re-chaining a tampered trail
would launder the tampering. The old chain had no key, so re-computing it loses nothing it could prove.
Runs as the table's owner (migrations do), which may switch the append-only trigger off for the rewrite.
"""

import hashlib
import hmac
import json

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import migrations

GENESIS_HASH = "0" * 64


def _canonical(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _payload(event, previous_hash: str) -> str:
    return _canonical({
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
        "previous_hash": previous_hash,
    })


def _key() -> bytes:
    if settings.AUDIT_CHAIN_KEY:
        return settings.AUDIT_CHAIN_KEY.encode("utf-8")
    return hashlib.sha256(b"cxr-portal audit chain:" + settings.SECRET_KEY.encode("utf-8")).digest()


def rechain(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    events = list(AuditEvent.objects.order_by("sequence"))
    if not events:
        return
    previous = GENESIS_HASH
    for expected_sequence, event in enumerate(events, start=1):
        if (event.sequence != expected_sequence or event.previous_hash != previous
                or hashlib.sha256(_payload(event, previous).encode("utf-8")).hexdigest() != event.hash):
            raise RuntimeError(
                f"The audit chain is broken at event #{event.sequence}; it is not re-chained under CXR_AUDIT_KEY. "
                "Run `manage.py audit_verify` on the previous release and investigate first."
            )
        previous = event.hash
    key = _key()
    guarded = schema_editor.connection.vendor == "postgresql"
    with schema_editor.connection.cursor() as cursor:
        if guarded:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        previous = GENESIS_HASH
        for event in events:
            keyed = hmac.new(key, _payload(event, previous).encode("utf-8"), hashlib.sha256).hexdigest()
            cursor.execute("UPDATE audit_auditevent SET previous_hash = %s, hash = %s WHERE id = %s",
                           [previous, keyed, event.id])
            previous = keyed
        if guarded:
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_actor_without_database_constraint")]

    operations = [migrations.RunPython(rechain, migrations.RunPython.noop, elidable=True)]
