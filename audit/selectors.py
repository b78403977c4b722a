from dataclasses import dataclass

from .models import AuditEvent
from .services import GENESIS_HASH, compute_event_hash


@dataclass(frozen=True)
class ChainVerification:
    checked: int
    first_broken_sequence: int | None
    reason: str

    @property
    def valid(self) -> bool:
        return self.first_broken_sequence is None


def audit_chain_verify() -> ChainVerification:
    """Recompute every hash in sequence order and name the first event that does not fit."""
    previous_hash = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        if event.sequence != expected_sequence:
            return ChainVerification(checked, event.sequence, f"expected event #{expected_sequence}, found #{event.sequence} (an event was removed or reordered)")
        if event.previous_hash != previous_hash:
            return ChainVerification(checked, event.sequence, "its previous_hash does not match the event before it")
        if compute_event_hash(event) != event.hash:
            return ChainVerification(checked, event.sequence, "its content does not match its hash (it was edited)")
        previous_hash = event.hash
        expected_sequence += 1
        checked += 1
    return ChainVerification(checked, None, "")
