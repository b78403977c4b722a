"""Celery tasks of the audit trail."""

import logging

from celery import shared_task

from audit.anchors import AuditChainBroken, audit_chain_anchor

logger = logging.getLogger(__name__)


@shared_task(name="audit.anchor_chain_head", time_limit=300, soft_time_limit=240)
def anchor_chain_head() -> int:
    try:
        anchor = audit_chain_anchor()
    except AuditChainBroken as error:
        # Loud, and no anchor: the operators run audit_verify (docs/operations.md).
        logger.error("Audit chain not anchored: %s", error)
        raise
    return anchor.sequence if anchor else 0
