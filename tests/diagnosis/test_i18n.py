"""Languages: the user picks English or Spanish; pages and the PDF report follow."""

import io

import pytest
from django.conf import settings
from django.urls import reverse


@pytest.mark.django_db
def test_language_picker_switches_the_interface_to_spanish_and_back(client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert '<html lang="en">' in page and 'data-testid="language-picker"' in page

    response = client.post(reverse("set_language"), {"language": "es", "next": reverse("diagnosis:worklist")})
    assert response.status_code == 302 and response["Location"] == reverse("diagnosis:worklist")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "es"
    page = client.get(reverse("diagnosis:worklist")).content.decode()
    assert '<html lang="es">' in page

    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert '<html lang="en">' in client.get(reverse("diagnosis:worklist")).content.decode()


@pytest.mark.django_db
def test_anonymous_visitor_can_pick_a_language_on_the_sign_in_page(client):
    page = client.get(reverse("accounts:login")).content.decode()
    assert 'data-testid="language-picker"' in page
    response = client.post(reverse("set_language"), {"language": "es", "next": reverse("accounts:login")})
    assert response.status_code == 302
    assert '<html lang="es">' in client.get(reverse("accounts:login")).content.decode()


@pytest.mark.django_db
def test_unknown_language_is_ignored(client, clinician):
    client.force_login(clinician)
    client.post(reverse("set_language"), {"language": "xx", "next": "/"})
    assert '<html lang="en">' in client.get(reverse("diagnosis:worklist")).content.decode()


LOCALE_DIR = settings.BASE_DIR / "locale"
SPANISH_CATALOGUE = LOCALE_DIR / "es" / "LC_MESSAGES" / "django.po"


def placeholders(text: str) -> list[str]:
    import re

    return sorted(re.findall(r"%\(\w+\)[sd]", text))


def test_spanish_catalogue_is_complete_and_compiled():
    import polib

    catalogue = polib.pofile(str(SPANISH_CATALOGUE))
    assert len(catalogue) > 250
    assert catalogue.untranslated_entries() == []
    assert catalogue.fuzzy_entries() == []
    for entry in catalogue.translated_entries():
        if entry.msgid_plural:
            assert placeholders(entry.msgstr_plural[1]) == placeholders(entry.msgid_plural), entry.msgid
        else:
            assert placeholders(entry.msgstr) == placeholders(entry.msgid), entry.msgid
    # The committed .mo is the compiled .po, so a fresh clone needs no gettext tools.
    compiled = polib.mofile(str(SPANISH_CATALOGUE.with_suffix(".mo")))
    assert {(entry.msgid, entry.msgstr) for entry in compiled if not entry.msgid_plural} == {
        (entry.msgid, entry.msgstr) for entry in catalogue if not entry.msgid_plural and entry.msgid}


def test_spanish_catalogue_has_every_string_the_code_and_templates_mark(tmp_path):
    """makemessages over the project finds no string the committed catalogue lacks."""
    import shutil
    import subprocess
    import sys

    import polib

    if shutil.which("xgettext") is None:
        pytest.skip("xgettext (gettext) is not installed; .ci/run installs it so CI runs this check")
    # makemessages writes each file's strings into the locale folder above it (and ./locale), whatever
    # LOCALE_PATHS says, so it runs on a copy of the project: run in place, it would add the new strings to the
    # committed catalogue and then find nothing missing.
    project = tmp_path / "project"
    shutil.copytree(settings.BASE_DIR, project, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "runs", "control", "test-artifacts", "static", "docs", "logs", "artifacts",
        "__pycache__", "*.png", "*.tflite", "*.keras", "*.npz"))
    committed_bytes = SPANISH_CATALOGUE.read_bytes()
    env = {**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "tests.diagnosis.i18n_settings",
           "CXR_TEST_LOCALE_DIR": str(project / "locale")}
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "es", "--no-obsolete", "--no-location",
         *[f"--ignore={name}" for name in ("bench", "tests")]],
        cwd=project, env=env, check=True, capture_output=True,
    )
    assert SPANISH_CATALOGUE.read_bytes() == committed_bytes
    extracted = {entry.msgid for entry in polib.pofile(str(project / "locale" / "es" / "LC_MESSAGES" / "django.po"))}
    committed = {entry.msgid for entry in polib.pofile(str(SPANISH_CATALOGUE))}
    assert extracted - committed == set(), "run makemessages -l es and translate the new strings"


@pytest.mark.django_db
def test_pages_and_the_pdf_report_are_in_spanish_when_picked(client, clinician, patient, monkeypatch):

    from pypdf import PdfReader

    from tests.diagnosis import factories

    model = factories.model_version(covid_threshold=0.6, status="active")
    study = factories.uploaded_study(patient=patient, uploaded_by=clinician, monkeypatch=monkeypatch)
    factories.completed_prediction(study=study, model=model, covid=0.2)
    client.force_login(clinician)
    client.post(reverse("set_language"), {"language": "es", "next": "/"})

    worklist = client.get(reverse("diagnosis:worklist")).content.decode()
    assert "Lista de trabajo" in worklist and "Pendiente de mi revisión" in worklist and "Cerrar sesión" in worklist
    page = client.get(reverse("diagnosis:study_detail", args=[study.id])).content.decode()
    assert "no sustituye, el juicio de un clínico cualificado" in page
    assert "Sin hallazgos" in page and "Neumonía" in page and "Registrar su valoración" in page

    report = client.get(reverse("diagnosis:study_report", args=[study.id])).content
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(report)).pages)
    assert "informe de radiografía de tórax" in text and "no sustituye" in text and "Sin hallazgos" in text


def test_acknowledging_an_alert_never_reads_as_confirming_it_in_spanish():
    """An alert asks for a review and does not confirm COVID-19: "acknowledged" must read as seen, not confirmed."""
    import polib

    catalogue = polib.pofile(str(SPANISH_CATALOGUE))
    acknowledging = [entry for entry in catalogue if "cknowledg" in entry.msgid]
    assert len(acknowledging) >= 5
    for entry in acknowledging:
        assert "onfirm" not in entry.msgstr.lower(), (entry.msgid, entry.msgstr)
    assert catalogue.find("Acknowledge").msgstr == "Marcar como vista"
