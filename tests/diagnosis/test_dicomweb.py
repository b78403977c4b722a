"""STOW-RS: POST /dicomweb/studies with multipart/related; type="application/dicom" and a token."""

import uuid

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from audit.models import AuditEvent
from diagnosis.models import Study, StudySource
from diagnosis.services.dicom import STATUS_CANNOT_UNDERSTAND, STATUS_SOP_CLASS_NOT_SUPPORTED
from tests import dicom_films
from tests.factories import UserFactory

FAILED = "00081198"
REFERENCED = "00081199"


def multipart_related(*parts: tuple[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + data + b"\r\n"
        for content_type, data in parts
    ) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(user, *parts, content_type=None):
    body, multipart_type = multipart_related(*parts)
    headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=user)[0].key}"} if user else {}
    return Client().post("/dicomweb/studies", data=body, content_type=content_type or multipart_type,
                         HTTP_ACCEPT="application/dicom+json", **headers)


def sop_uids(sequence: dict) -> list[str]:
    return [item["00081155"]["Value"][0] for item in sequence["Value"]]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_stores_every_instance_and_lists_them(clinician, queued_inference):
    films = [dicom_films.radiograph(accession_number=f"STOW-{n}", seed=n) for n in range(2)]

    response = stow(clinician, *[("application/dicom", dicom_films.file_bytes(film)) for film in films])

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/dicom+json")
    body = response.json()
    assert FAILED not in body
    assert sop_uids(body[REFERENCED]) == [film.SOPInstanceUID for film in films]
    assert body[REFERENCED]["Value"][0]["00081150"]["Value"] == [dicom_films.DX_FOR_PRESENTATION]
    studies = Study.objects.filter(source=StudySource.STOW).order_by("accession_number")
    assert [study.accession_number for study in studies] == ["STOW-0", "STOW-1"]
    assert sorted(call["study_id"] for call in queued_inference) == sorted(study.id for study in studies)
    events = AuditEvent.objects.filter(action="study.receive", outcome="success")
    assert {event.actor_username for event in events} == {clinician.username}
    assert {event.details["source"] for event in events} == {"stow"}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_reports_each_failure_beside_what_was_stored(clinician, queued_inference):
    good = dicom_films.radiograph(accession_number="STOW-OK")
    ct = dicom_films.ct_slice()
    truncated = dicom_films.truncated_radiograph()

    response = stow(clinician, ("application/dicom", dicom_films.file_bytes(good)),
                    ("application/dicom", dicom_films.file_bytes(ct)),
                    ("application/dicom", dicom_films.file_bytes(truncated)),
                    ("text/plain", b"not an image"))

    assert response.status_code == 202
    body = response.json()
    assert sop_uids(body[REFERENCED]) == [good.SOPInstanceUID]
    failures = body[FAILED]["Value"]
    assert [item["00081197"]["Value"][0] for item in failures] == [
        STATUS_SOP_CLASS_NOT_SUPPORTED, STATUS_CANNOT_UNDERSTAND, STATUS_CANNOT_UNDERSTAND]
    assert failures[0]["00081155"]["Value"] == [ct.SOPInstanceUID]
    assert failures[1]["00081155"]["Value"] == [truncated.SOPInstanceUID]
    assert "Value" not in failures[2]["00081155"]
    assert list(Study.objects.values_list("sop_instance_uid", flat=True)) == [good.SOPInstanceUID]


@pytest.mark.django_db
def test_answers_conflict_when_nothing_was_stored(clinician, queued_inference):
    response = stow(clinician, ("application/dicom", dicom_films.file_bytes(dicom_films.ct_slice())))

    assert response.status_code == 409
    assert REFERENCED not in response.json()
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_a_repeat_is_stored_once(clinician, queued_inference):
    data = dicom_films.file_bytes(dicom_films.radiograph())

    assert stow(clinician, ("application/dicom", data)).status_code == 200
    assert stow(clinician, ("application/dicom", data)).status_code == 200
    assert Study.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("role, expected", [("anonymous", 401), ("administrator", 403), ("auditor", 403)])
def test_only_clinical_accounts_may_store(role, expected, queued_inference):
    user = None if role == "anonymous" else UserFactory(**{role: True})

    response = stow(user, ("application/dicom", dicom_films.file_bytes(dicom_films.radiograph())))

    assert response.status_code == expected
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_refuses_bodies_that_are_not_multipart_related_dicom(clinician, queued_inference):
    data = dicom_films.file_bytes(dicom_films.radiograph())
    assert stow(clinician, ("application/dicom", data), content_type="application/dicom").status_code == 415
    assert stow(clinician, ("application/dicom", data),
                content_type='multipart/related; type="image/jpeg"; boundary=x').status_code == 415
    assert stow(clinician, ("application/dicom", data),
                content_type='multipart/related; type="application/dicom"; boundary=not-the-boundary').status_code == 400
    assert not Study.objects.exists()
