import datetime
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from cxr_portal.filters import within_days

from .anchor_file import anchors_read
from .models import AuditEvent
from .services import GENESIS_HASH, compute_event_hash


@dataclass(frozen=True)
class ChainVerification:
    checked: int
    first_broken_sequence: int | None
    reason: str
    # "", or what was found: edited, relinked, gap, rewritten, tail_deleted, truncated, anchor_forged
    finding: str = ""
    anchors_checked: int = 0

    @property
    def valid(self) -> bool:
        return not self.finding


def _walk(events, *, previous_hash: str, expected_sequence: int, anchors: dict) -> ChainVerification:
    checked = 0
    anchors_checked = 0
    for event in events:
        if event.sequence != expected_sequence:
            return ChainVerification(checked, event.sequence, f"expected event #{expected_sequence}, found #{event.sequence} "
                                     "(an event was removed or reordered)", "gap", anchors_checked)
        if event.previous_hash != previous_hash:
            return ChainVerification(checked, event.sequence, "its previous_hash does not match the event before it",
                                     "relinked", anchors_checked)
        if compute_event_hash(event) != event.hash:
            return ChainVerification(checked, event.sequence, "its content does not match its keyed hash (it was edited, "
                                     "or the chain was recomputed without the audit key)", "edited", anchors_checked)
        anchor = anchors.get(event.sequence)
        if anchor is not None:
            if anchor.hash != event.hash:
                return ChainVerification(checked, event.sequence, f"it differs from the anchor written at {anchor.anchored_at.isoformat()} "
                                         "(the chain was rewritten and recomputed from here or earlier)", "rewritten", anchors_checked)
            anchors_checked += 1
        previous_hash = event.hash
        expected_sequence += 1
        checked += 1
    return ChainVerification(checked, None, "", "", anchors_checked)


def audit_chain_verify() -> ChainVerification:
    """Recompute every keyed hash in sequence order, compare the chain with the anchors outside the
    database, and name the first thing that does not fit."""
    anchor_file = anchors_read()
    anchors = {anchor.sequence: anchor for anchor in anchor_file.anchors}
    result = _walk(AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000),
                   previous_hash=GENESIS_HASH, expected_sequence=1, anchors=anchors)
    if not result.valid:
        return result
    newest = max(anchor_file.anchors, key=lambda anchor: anchor.sequence, default=None)
    if newest is not None and newest.sequence > result.checked:
        when = newest.anchored_at.isoformat()
        if result.checked == 0:
            return ChainVerification(0, 1, f"the audit table is empty, but the anchor written at {when} recorded "
                                     f"{newest.sequence} events (the table was truncated)", "truncated", result.anchors_checked)
        return ChainVerification(result.checked, result.checked + 1, f"events #{result.checked + 1} to #{newest.sequence}, "
                                 f"anchored at {when}, are missing (the newest events were deleted)", "tail_deleted",
                                 result.anchors_checked)
    if anchor_file.forged_lines:
        lines = ", ".join(str(number) for number in anchor_file.forged_lines)
        return ChainVerification(result.checked, None, f"anchor file line(s) {lines} are not signed with the audit key "
                                 "(the anchor file was edited)", "anchor_forged", result.anchors_checked)
    return result


def audit_chain_verify_since(*, sequence: int, event_hash: str) -> ChainVerification:
    """Verify only the events after one already anchored (sequence 0: from the start)."""
    if sequence:
        anchored = AuditEvent.objects.filter(sequence=sequence).first()
        if anchored is None or anchored.hash != event_hash:
            return ChainVerification(0, sequence, "the anchored event is missing or differs from its anchor", "rewritten")
    events = AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence").iterator(chunk_size=2000)
    return _walk(events, previous_hash=event_hash, expected_sequence=sequence + 1, anchors={})


def audit_events_filtered(*, user: str = "", patient: str = "", action: str = "", outcome: str = "",
                          date_from: datetime.date | None = None, date_to: datetime.date | None = None) -> QuerySet[AuditEvent]:
    """Newest first. Callers check the reader's capability (audit.views) and audit the read."""
    events = AuditEvent.objects.order_by("-sequence")
    if user:
        events = events.filter(actor_username=user)
    if patient:
        # Lists and exports name the patients they showed in details (audit.services.audit_read_many).
        events = events.filter(Q(patient_identifier=patient) | Q(details__patients__contains=[patient]))
    if action:
        events = events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
    if outcome:
        events = events.filter(outcome=outcome)
    return within_days(events, "created_at", date_from, date_to)
