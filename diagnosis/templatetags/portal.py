"""Template filters for what every page shows the same way: clinicians' labels and rounded figures."""

from django import template
from django.utils.formats import number_format

from ..models.feedback import CorrectLabel

register = template.Library()


@register.filter
def correct_label_display(value: str) -> str:
    """A clinician's label (CorrectLabel value) in the reader's language."""
    try:
        return str(CorrectLabel(value).label)
    except ValueError:
        return value or ""


@register.filter
def figure(value, digits: int = 3) -> str:
    """A ratio or threshold rounded to ``digits`` decimals, with the language's decimal separator; — when missing."""
    if not isinstance(value, (int, float)) or value != value:
        return "—"
    return number_format(round(float(value), int(digits)), int(digits), use_l10n=True)


@register.filter
def box_style(box: dict) -> str:
    """CSS placing a layer over a film at ``box`` (fractions of its height and width): always with a decimal point,
    whatever the reader's language, or the browser drops it."""
    top, bottom = float(box.get("top", 0.0)), float(box.get("bottom", 1.0))
    left, right = float(box.get("left", 0.0)), float(box.get("right", 1.0))
    return (f"top: {100 * top:.3f}%; left: {100 * left:.3f}%; "
            f"width: {100 * (right - left):.3f}%; height: {100 * (bottom - top):.3f}%;")


@register.filter
def validation_figures(model_version) -> list[tuple[str, str]]:
    """A version's validation figures with their names and rounded values (never raw metric keys)."""
    from ..selectors import validation_figures as figures

    return figures(model_version)


@register.filter
def class_display(name: str) -> str:
    """One of the model's classes (covid, normal, pneumonia) as readers know it."""
    from ..texts import class_display_name

    return class_display_name(name)
