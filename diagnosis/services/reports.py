"""The PDF report of one study: patient, study, image and heatmap, probabilities, model, feedback, disclaimer.

Every string goes through Django's translation framework; the caller activates the reader's language.
"""

import io

from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext as _
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from xml.sax.saxutils import escape

from diagnosis.models import Study
from diagnosis.selectors import feedback_for_study, validation_figures
from diagnosis.texts import clinical_disclaimer

from . import storage
from .pictures import film_with_heatmap


def _plain(value) -> str:
    """For table cells: reportlab draws a plain string as it is, so it must not be escaped."""
    return str(value if value not in (None, "") else "—")


def _text(value) -> str:
    """For Paragraphs, which read their text as markup."""
    return escape(_plain(value))


def _when(value) -> str:
    return date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT") if value else "—"


def _day(value) -> str:
    return date_format(value, "SHORT_DATE_FORMAT") if value else "—"


def _table(rows, widths) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT")
    table.setStyle(TableStyle([
        ("FONTSIZE", (0, 0), (-1, -1), 9),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
    ]))
    return table


def _picture(digest: str, kind: str, width: float) -> Image | None:
    try:
        data = storage.blob_get(digest, kind=kind)
    except (FileNotFoundError, OSError, ValueError):
        return None
    picture = Image(io.BytesIO(data))
    scale = width / picture.imageWidth
    picture.drawWidth, picture.drawHeight = width, picture.imageHeight * scale
    return picture


def _alert_block(alert, body) -> KeepTogether:
    """The alert, why it stands under another result and what it means: one framed block, never split over pages."""
    paragraphs = [Paragraph("<b>%s</b> %s" % (escape(_("COVID-19 alert.")), escape(
        _("Calibrated probability %(probability)s, at or above the threshold %(threshold)s.") % {
            "probability": number_format(alert.covid_probability, 3),
            "threshold": number_format(alert.covid_threshold, 3)})), body)]
    for text in (alert.other_class_explanation(), alert.meaning(), alert.state_text()):
        if text:
            paragraphs.append(Paragraph(escape(text), body))
    frame = Table([[paragraphs]], colWidths=[170 * mm], hAlign="LEFT")
    frame.setStyle(TableStyle([
        ("BOX", (0, 0), (-1, -1), 0.75, colors.HexColor("#b02a37")),
        ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f8d7da" if alert.state == "open" else "#e2e3e5")),
        ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
    ]))
    return KeepTogether([Spacer(1, 2 * mm), frame, Spacer(1, 2 * mm)])


def _film_with_heatmap(prediction, width: float) -> Image | None:
    """The film with the heatmap layer laid over the crop box the model saw, as on the study page."""
    try:
        film = film_with_heatmap(prediction)
    except (FileNotFoundError, OSError, ValueError, storage.StoredBlobUnreadable):
        return None
    buffer = io.BytesIO()
    film.save(buffer, format="PNG")
    picture = Image(io.BytesIO(buffer.getvalue()))
    picture.drawWidth, picture.drawHeight = width, picture.imageHeight * width / picture.imageWidth
    return picture


def study_report_pdf(*, study: Study) -> bytes:
    """Render the study's report. The study must come from diagnosis.access (which authorised and audited the read)."""
    styles = getSampleStyleSheet()
    body, heading = styles["BodyText"], styles["Heading2"]
    predictions = list(study.predictions.all())
    prediction = predictions[0] if predictions else None
    story = [
        Paragraph(escape(_("CXR Portal — chest X-ray report")), styles["Title"]),
        Paragraph("<b>%s</b>" % escape(clinical_disclaimer()), body),
        Spacer(1, 4 * mm),
        Paragraph(escape(_("Patient")), heading),
        _table([
            [_("Name"), _plain(study.patient.name)],
            [_("MRN"), _plain(study.patient.mrn)],
            [_("Birth date"), _day(study.patient.birth_date)],
            [_("Sex"), _plain(study.patient.get_sex_display())],
        ], [40 * mm, 130 * mm]),
        Paragraph(escape(_("Study")), heading),
        _table([
            [_("Accession number"), _plain(study.accession_number)],
            [_("View"), _plain(study.get_view_position_display())],
            [_("Acquired"), _day(study.acquisition_date)],
            [_("Uploaded"), _when(study.created_at)],
            [_("Status"), _plain(study.get_status_display())],
            [_("Image"), _plain(f"{study.image.format} {study.image.width}×{study.image.height}")],
        ], [40 * mm, 130 * mm]),
    ]
    pictures = [_picture(study.image.sha256, storage.PREVIEW, 80 * mm)]
    captions = [_("Image")]
    if prediction is not None and prediction.heatmap_sha256 and prediction.heatmap_box:
        pictures.append(_film_with_heatmap(prediction, 80 * mm))
        captions.append(_("The same film with the Grad-CAM heatmap over the part the model analysed (regions that "
                          "most influenced the model; not a lesion map)"))
    elif prediction is not None and prediction.heatmap_sha256:
        pictures.append(_picture(prediction.heatmap_sha256, storage.HEATMAP, 80 * mm))
        captions.append(_("Grad-CAM heatmap (regions that most influenced the model; not a lesion map)"))
    if any(pictures):
        gallery = Table(
            [[picture or "" for picture in pictures], [Paragraph(escape(caption), body) for caption in captions]],
            colWidths=[85 * mm] * len(pictures), hAlign="LEFT",
        )
        gallery.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
        story += [Spacer(1, 3 * mm), gallery]
    story.append(Paragraph(escape(_("Model output")), heading))
    if prediction is None:
        story.append(Paragraph(escape(_("No model output for this study.")), body))
    else:
        story.append(Paragraph("<b>%s</b>: %s" % (escape(_("Result")), _text(prediction.predicted_display)), body))
        for message in prediction.warning_messages():
            story.append(Paragraph("<b>%s</b>" % escape(message), body))
        if prediction.model_version.site_validation_notice:
            story.append(Paragraph("<b>%s</b>" % escape(prediction.model_version.site_validation_notice), body))
        alert = getattr(study, "alert", None)
        if alert is not None:
            story.append(_alert_block(alert, body))
        story.append(_table(
            [[_("Class"), _("Calibrated probability")]]
            + [[_plain(row["display"]), number_format(row["probability"], 3)] for row in prediction.probability_rows()],
            [60 * mm, 50 * mm],
        ))
        story.append(Paragraph(escape(_("Model version")), heading))
        version = prediction.model_version
        story.append(_table(
            [[_("Model version"), _plain(version)], [_("Architecture"), _plain(version.architecture)],
             [_("Model file SHA-256"), _plain(version.file_sha256[:16] + "…")],
             [_("Analysed"), _when(prediction.created_at)]]
            + [[label, value] for label, value in validation_figures(version)],
            [70 * mm, 100 * mm],
        ))
    story.append(Paragraph(escape(_("Clinician feedback")), heading))
    feedback = list(feedback_for_study(study=study))
    if not feedback:
        story.append(Paragraph(escape(_("No feedback recorded.")), body))
    for item in feedback:
        verdict = _("agrees") if item.agrees else _("disagrees")
        story.append(Paragraph(escape(
            _("%(author)s %(verdict)s; correct label: %(label)s (%(when)s)") % {
                "author": item.author.get_username(), "verdict": verdict,
                "label": item.get_correct_label_display(), "when": _when(item.updated_at)}
        ), body))
        if item.note:
            story.append(Paragraph(_text(item.note), body))
    story += [Spacer(1, 6 * mm), Paragraph("<i>%s</i>" % escape(clinical_disclaimer()), body),
              Paragraph(escape(_("Generated %(when)s") % {"when": _when(timezone.now())}), body)]

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
        title=_("Chest X-ray report %(accession)s") % {"accession": study.accession_number}, author="CXR Portal",
    )
    document.build(story)
    return buffer.getvalue()
