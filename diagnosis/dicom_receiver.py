"""The DICOM receiver (C-STORE SCP): modalities and the PACS send chest radiographs here.

A thin door, like a view: it checks who is calling, hands each instance to
diagnosis.services.dicom.study_create_from_dicom and answers with the status that says what happened.
Success is answered only after the study is committed (or found to be a repeat).
"""

import logging
import ssl
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from audit.context import RequestContext, reset_request_context, set_request_context
from audit.models import Outcome
from audit.services import audit_record
from diagnosis.models import StudySource
from diagnosis.services.dicom import (
    ACCEPTED_SOP_CLASSES,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    DicomRefused,
    DicomSender,
    study_create_from_dicom,
)

logger = logging.getLogger(__name__)

# DICOM LO (Error Comment) holds at most 64 characters.
ERROR_COMMENT_MAX = 64


@dataclass(frozen=True)
class ReceiverConfig:
    ae_title: str
    port: int
    bind_address: str = "127.0.0.1"
    allowed_calling_aes: list[str] = field(default_factory=list)
    tls_certificate: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # when set, callers must present a certificate signed by it

    @classmethod
    def from_settings(cls, **overrides) -> "ReceiverConfig":
        values = {
            "ae_title": settings.CXR_DICOM_AE_TITLE,
            "port": settings.CXR_DICOM_PORT,
            "bind_address": settings.CXR_DICOM_BIND_ADDRESS,
            "allowed_calling_aes": list(settings.CXR_DICOM_ALLOWED_CALLING_AES),
            "tls_certificate": settings.CXR_DICOM_TLS_CERTIFICATE,
            "tls_key": settings.CXR_DICOM_TLS_KEY,
            "tls_client_ca": settings.CXR_DICOM_TLS_CLIENT_CA,
        }
        values.update({key: value for key, value in overrides.items() if value not in (None, "", [])})
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_certificate:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_certificate, self.tls_key or None)
        if self.tls_client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.tls_client_ca)
        return context


def _requestor(event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def _audited(event):
    """Audit events written while handling this event carry the caller's address."""
    calling_ae, address = _requestor(event)
    return set_request_context(RequestContext(client_ip=address, user_agent=f"DICOM {calling_ae}"[:512]))


def handle_store(event) -> int | Dataset:
    calling_ae, address = _requestor(event)
    token = _audited(event)
    try:
        received = study_create_from_dicom(
            data=event.encoded_dataset(include_meta=True),
            sender=DicomSender(source=StudySource.PACS, address=address, calling_ae=calling_ae),
        )
        logger.info("Stored %s from %s (%s): study %s%s", received.study.sop_instance_uid, calling_ae, address,
                    received.study.id, "" if received.created else " (repeat)")
        return STATUS_SUCCESS
    except DicomRefused as refusal:
        logger.info("Refused an instance from %s (%s): %s", calling_ae, address, refusal)
        return _status(refusal.status, str(refusal))
    except Exception:  # noqa: BLE001 - whatever failed, nothing was stored: the sender must not hear success
        logger.exception("Could not store an instance from %s (%s)", calling_ae, address)
        return _status(STATUS_OUT_OF_RESOURCES, "The portal could not store the instance; try again.")
    finally:
        reset_request_context(token)


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:ERROR_COMMENT_MAX]
    return status


def handle_accepted(event) -> None:
    _audit_association(event, outcome=Outcome.SUCCESS)


def handle_rejected(event) -> None:
    _audit_association(event, outcome=Outcome.DENIED)


def _audit_association(event, *, outcome: str) -> None:
    calling_ae, address = _requestor(event)
    token = _audited(event)
    try:
        with transaction.atomic():
            audit_record(action="dicom.association", username=f"dicom:{calling_ae}", outcome=outcome,
                         details={"calling_ae": calling_ae, "called_ae": str(event.assoc.acceptor.ae_title).strip(),
                                  "address": address, "port": event.assoc.requestor.port})
    except Exception:  # noqa: BLE001 - an audit failure must not leave a thread's connection broken
        logger.exception("Could not audit the association from %s (%s)", calling_ae, address)
    finally:
        reset_request_context(token)
        if outcome != Outcome.SUCCESS:
            # A rejected association ends here (no release event follows): close its thread's connection now.
            connection.close()


def handle_closed(event) -> None:
    # Each association runs in its own thread with its own database connection: close it with the association.
    connection.close()


def build_application_entity(config: ReceiverConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        # Radiographs may come compressed (the portal decodes JPEG, JPEG 2000, JPEG-LS, RLE); other SOP classes are
        # negotiated only so that they can be refused with a DIMSE status the sender understands.
        syntaxes = ALL_TRANSFER_SYNTAXES if context.abstract_syntax in ACCEPTED_SOP_CLASSES else None
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    # Unknown calling AE titles are rejected at association (A-ASSOCIATE-RJ, "calling AE title not recognised").
    # pynetdicom reads an empty list as "anyone": deny by default instead.
    if not config.allowed_calling_aes:
        raise ValueError("No calling AE title is allowed to send: set CXR_DICOM_ALLOWED_CALLING_AES (or --allow).")
    ae.require_calling_aet = list(config.allowed_calling_aes)
    ae.maximum_pdu_size = 0  # no limit on what the receiver accepts per PDU
    return ae


def event_handlers() -> list:
    return [
        (evt.EVT_C_STORE, handle_store),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_REJECTED, handle_rejected),
        (evt.EVT_RELEASED, handle_closed),
        (evt.EVT_ABORTED, handle_closed),
    ]


def receiver_start(config: ReceiverConfig, *, block: bool = True):
    """Listen for associations; with block=False return the running server (tests and benchmarks stop it)."""
    ae = build_application_entity(config)
    return ae.start_server(
        (config.bind_address, config.port),
        block=block,
        ssl_context=config.ssl_context(),
        evt_handlers=event_handlers(),
    )
