"""Anchors of the audit chain's head, appended to a file outside the database.

A line records the sequence and HMAC of the newest event and when they were seen, signed with the
audit key. Whoever owns the database can rewrite the table, but not this file (it lives on the
application's volume or another host; docs/operations.md says where), so `audit_verify` can tell a
deleted tail, a truncated table or a chain recomputed from an edited event from the real history.
"""

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .services import keyed_digest


@dataclass(frozen=True)
class Anchor:
    sequence: int
    hash: str
    anchored_at: datetime.datetime
    line_number: int


@dataclass(frozen=True)
class AnchorFile:
    anchors: list[Anchor]
    forged_lines: list[int]  # lines that are not valid JSON or whose signature does not match


def _signed_text(sequence: int, event_hash: str, anchored_at: str) -> str:
    return f"anchor|{sequence}|{event_hash}|{anchored_at}"


def anchor_file_path() -> Path:
    return Path(settings.AUDIT_ANCHOR_FILE)


def anchors_read() -> AnchorFile:
    path = anchor_file_path()
    if not path.exists():
        return AnchorFile([], [])
    anchors: list[Anchor] = []
    forged: list[int] = []
    with path.open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                sequence, event_hash, anchored_at = int(record["sequence"]), str(record["hash"]), str(record["anchored_at"])
                signature = str(record["signature"])
            except (ValueError, KeyError, TypeError):
                forged.append(line_number)
                continue
            if keyed_digest(_signed_text(sequence, event_hash, anchored_at)) != signature:
                forged.append(line_number)
                continue
            anchors.append(Anchor(sequence, event_hash, datetime.datetime.fromisoformat(anchored_at), line_number))
    return AnchorFile(anchors, forged)


def anchor_append(*, sequence: int, event_hash: str) -> Anchor:
    """Append one signed line and flush it to disk before returning."""
    anchored_at = timezone.now().isoformat()
    line = json.dumps({
        "sequence": sequence,
        "hash": event_hash,
        "anchored_at": anchored_at,
        "signature": keyed_digest(_signed_text(sequence, event_hash, anchored_at)),
    }, sort_keys=True)
    path = anchor_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: every write lands at the end, also on a file marked append-only (chattr +a).
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(descriptor, (line + "\n").encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return Anchor(sequence, event_hash, datetime.datetime.fromisoformat(anchored_at), 0)

