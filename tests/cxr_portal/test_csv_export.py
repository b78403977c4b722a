"""One CSV writer for every download (cxr_portal.csv_export): formulas defused, None an empty cell."""

import csv
import io

import pytest

from cxr_portal.csv_export import csv_cell, csv_download


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_cell_a_spreadsheet_would_run_as_a_formula_gets_a_leading_quote(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize(("value", "cell"), [(None, ""), ("", ""), ("plain", "plain"), (0.5, "0.5"), ("a=b", "a=b")])
def test_other_cells_are_their_text_and_none_is_empty(value, cell):
    assert csv_cell(value) == cell


def test_download_streams_the_header_and_defused_rows_uncached():
    response = csv_download(iter([["=HYPERLINK(\"x\")", None, 3]]), header=["name", "note", "count"],
                            filename="export.csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [["name", "note", "count"], ["'=HYPERLINK(\"x\")", "", "3"]]
    assert response["Content-Disposition"] == 'attachment; filename="export.csv"'
    assert response["Cache-Control"] == "private, no-store" and response["Content-Type"].startswith("text/csv")
