"""Template access to diagnosis.texts, so pages say the same words as the API, PDF and e-mail."""

from django import template

from diagnosis import texts

register = template.Library()


@register.simple_tag
def clinical_disclaimer() -> str:
    return texts.clinical_disclaimer()
