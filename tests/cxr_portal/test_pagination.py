"""One pagination include (templates/_pagination.html): its links change the page and keep every filter."""

import pytest
from django.urls import reverse

from diagnosis.views import WORKLIST_PAGE_SIZE
from tests.conftest import logged_in_client
from tests.factories import PatientFactory


@pytest.mark.django_db
def test_page_links_keep_the_search_and_any_other_filter(clinician):
    for number in range(WORKLIST_PAGE_SIZE + 1):
        PatientFactory(name=f"Lopez {number}")
    PatientFactory(name="Someone Else")
    client = logged_in_client(clinician)

    first = client.get(reverse("diagnosis:patient_list"), {"q": "Lopez", "sex": "F"}).content.decode()
    assert 'href="?q=Lopez&amp;sex=F&amp;page=2"' in first and "Page 1 of 2" in first

    second = client.get(reverse("diagnosis:patient_list"), {"q": "Lopez", "sex": "F", "page": 2}).content.decode()
    assert 'href="?q=Lopez&amp;sex=F&amp;page=1"' in second and "Page 2 of 2" in second
    assert "Someone Else" not in first + second  # the filter held on both pages


@pytest.mark.django_db
def test_a_single_page_shows_no_page_links(clinician):
    PatientFactory(name="Only One")
    page = logged_in_client(clinician).get(reverse("diagnosis:patient_list"), {"q": "Only"}).content.decode()
    assert 'data-testid="pagination"' not in page
