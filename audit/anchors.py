"""Anchoring the audit chain's head outside the database (the file format is in anchor_file.py)."""

from .anchor_file import Anchor, anchor_append, anchors_read
from .models import AuditEvent
from .selectors import audit_chain_verify_since
from .services import GENESIS_HASH


class AuditChainBroken(Exception):
    pass


def audit_chain_anchor() -> Anchor | None:
    """Anchor the chain's head, after checking the events since the last anchor; None when nothing is new.

    A broken chain is never anchored: that would bless the tampering. The error names what was found.
    """
    anchor_file = anchors_read()
    last = max(anchor_file.anchors, key=lambda anchor: anchor.sequence, default=None)
    since_sequence, since_hash = (last.sequence, last.hash) if last else (0, GENESIS_HASH)
    head = AuditEvent.objects.order_by("-sequence").only("sequence", "hash").first()
    head_sequence = head.sequence if head else 0
    if head_sequence < since_sequence:
        raise AuditChainBroken(f"the newest event is #{head_sequence}, but #{since_sequence} was anchored "
                               "(events were deleted or the table was truncated); run audit_verify")
    result = audit_chain_verify_since(sequence=since_sequence, event_hash=since_hash)
    if not result.valid:
        raise AuditChainBroken(f"event #{result.first_broken_sequence}: {result.reason}; run audit_verify")
    if head is None or head_sequence == since_sequence:
        return None
    # Anchor the last verified event: events added during the check wait for the next anchor.
    verified_head = AuditEvent.objects.only("sequence", "hash").get(sequence=since_sequence + result.checked)
    return anchor_append(sequence=verified_head.sequence, event_hash=verified_head.hash)
