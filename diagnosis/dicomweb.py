"""DICOMweb STOW-RS (PS3.18 10.5): systems that push over HTTP POST chest radiographs to /dicomweb/studies.

The body is multipart/related; type="application/dicom", one instance per part. Each instance goes
through diagnosis.services.dicom.study_create_from_dicom, like one the receiver took over DIMSE, and the
response lists, in the DICOM JSON model, what was stored (ReferencedSOPSequence) and what was not and
why (FailedSOPSequence with FailureReason). 200: all stored; 202: some; 409: none.
"""

import logging

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import require_capability
from accounts.authentication import ExpiringTokenAuthentication
from accounts.roles import Capability
from audit.context import current_request_context

from .models import StudySource
from .services.dicom import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    DicomRefused,
    DicomSender,
    dicom_header_read,
    study_create_from_dicom,
)

logger = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
# STOW-RS FailureReason for a part that is not application/dicom: "Error: Cannot understand" (PS3.18 Table I.2-1).
STATUS_PART_NOT_DICOM = STATUS_CANNOT_UNDERSTAND


class DicomJSONRenderer(JSONRenderer):
    media_type = "application/dicom+json"


class MultipartRelatedParser(BaseParser):
    """multipart/related (RFC 2387) into a list of (content type, bytes), one per part."""

    media_type = "multipart/related"

    def parse(self, stream, media_type=None, parser_context=None):
        parameters = _parameters(media_type or "")
        if parameters.get("type", DICOM_MEDIA_TYPE).lower() != DICOM_MEDIA_TYPE:
            raise UnsupportedMediaType(media_type, detail='Only multipart/related; type="application/dicom" is accepted.')
        boundary = parameters.get("boundary")
        if not boundary:
            raise ParseError("The multipart/related body has no boundary.")
        return multipart_related_parts(stream.read(), boundary)


def _parameters(media_type: str) -> dict[str, str]:
    parameters = {}
    for item in media_type.split(";")[1:]:
        name, _, value = item.strip().partition("=")
        parameters[name.strip().lower()] = value.strip().strip('"')
    return parameters


def multipart_related_parts(body: bytes, boundary: str) -> list[tuple[str, bytes]]:
    delimiter = b"\r\n--" + boundary.encode("ascii", "replace")
    sections = (b"\r\n" + body).split(delimiter)
    if len(sections) < 3:
        raise ParseError("The multipart/related body holds no part (or its closing boundary is missing).")
    parts = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            return parts
        headers, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            raise ParseError("A part of the multipart/related body has no header end.")
        content_type = DICOM_MEDIA_TYPE
        for line in headers.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.split(";")[0].strip().lower()
        parts.append((content_type, content))
    raise ParseError("The multipart/related body has no closing boundary.")


def _uid_element(uid: str) -> dict:
    return {"vr": "UI", "Value": [uid]} if uid else {"vr": "UI"}


def _identifiers(data: bytes) -> tuple[str, str]:
    try:
        header = dicom_header_read(data)
    except DicomRefused:
        return "", ""
    return str(header.get("SOPClassUID", "") or ""), str(header.get("SOPInstanceUID", "") or "")


class StowStudiesView(APIView):
    """POST /dicomweb/studies: store chest radiographs sent as multipart/related; type="application/dicom"."""

    authentication_classes = [ExpiringTokenAuthentication]
    parser_classes = [MultipartRelatedParser]
    renderer_classes = [DicomJSONRenderer, JSONRenderer]

    @extend_schema(request={"multipart/related": OpenApiTypes.BINARY}, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        # The role is checked before the body is read: a refused user learns nothing from validation.
        require_capability(user=request.user, capability=Capability.EDIT_CLINICAL, action="study.receive")
        parts = request.data
        sender = DicomSender(source=StudySource.STOW, address=current_request_context().client_ip or "",
                             user=request.user)
        stored, failed = [], []
        for content_type, data in parts:
            sop_class, sop_instance = _identifiers(data)
            item = {REFERENCED_SOP_CLASS_UID: _uid_element(sop_class),
                    REFERENCED_SOP_INSTANCE_UID: _uid_element(sop_instance)}
            if content_type != DICOM_MEDIA_TYPE:
                failed.append({**item, FAILURE_REASON: {"vr": "US", "Value": [STATUS_PART_NOT_DICOM]}})
                continue
            try:
                study_create_from_dicom(data=data, sender=sender)
            except DicomRefused as refusal:
                failed.append({**item, FAILURE_REASON: {"vr": "US", "Value": [refusal.status]}})
                continue
            except Exception:  # noqa: BLE001 - this instance was not stored; the others still count
                logger.exception("STOW-RS could not store instance %s", sop_instance)
                failed.append({**item, FAILURE_REASON: {"vr": "US", "Value": [STATUS_OUT_OF_RESOURCES]}})
                continue
            stored.append(item)
        body = {}
        if failed:
            body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
        if stored:
            body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": stored}
        if not stored:
            answer = status.HTTP_409_CONFLICT
        elif failed:
            answer = status.HTTP_202_ACCEPTED
        else:
            answer = status.HTTP_200_OK
        return Response(body, status=answer, content_type="application/dicom+json")
