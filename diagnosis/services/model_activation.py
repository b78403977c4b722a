"""Activating a model version from the Models page, and what the administrator is told when they do.

The warnings never refuse: the administrator decides. They say what the portal already knows will not show up
later: a failure on the version's own validation films (the site monitor compares this site with those films),
or a shortcut audit that suspects the version reads the film around the lungs, or no audit at all.
"""

from dataclasses import dataclass
from enum import StrEnum

from django.utils.translation import gettext as _

from diagnosis.models import ModelVersion

from .model_registry import model_version_activate
from .monitoring import model_version_reference_breaches


class NoticeLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class ActivationNotice:
    level: NoticeLevel
    text: str


def _percent(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "?"


def model_version_activation_notices(*, model_version: ModelVersion) -> list[ActivationNotice]:
    notices = []
    audit = (model_version.evaluation or {}).get("shortcut_audit")
    if audit is None:
        notices.append(ActivationNotice(NoticeLevel.INFO, _(
            "No shortcut audit is recorded for %(model)s: whether it reads the lungs or the film around them "
            "is unknown (python -m ml evaluate --record on its test split records one)."
        ) % {"model": model_version}))
    elif audit.get("shortcut_suspected"):
        notices.append(ActivationNotice(NoticeLevel.WARNING, _(
            "%(model)s still classifies %(accuracy)s of its test films correctly with the lungs hidden "
            "(chance %(chance)s): it reads the film around the lungs, which does not carry over to another "
            "hospital's films."
        ) % {"model": model_version, "accuracy": _percent(audit.get("lungs_hidden_accuracy")),
             "chance": _percent(audit.get("chance_accuracy"))}))
    for breach in model_version_reference_breaches(model_version):
        notices.append(ActivationNotice(NoticeLevel.WARNING, _(
            "On its own validation films %(model)s already breaks the site monitor's %(check)s limit "
            "(%(hits)s of %(films)s films against %(limit)s). The monitor compares this site with those films, "
            "so only its limit checks can show this failure: watch its first results closely."
        ) % {"model": model_version, "check": breach.code, "hits": breach.reference_hits,
             "films": breach.reference_n, "limit": f"{breach.limit:.0%}"}))
    return notices


def model_version_promote(*, model_version: ModelVersion, actor) -> list[ActivationNotice]:
    """Promote a candidate, or roll back to a retired version: either way it becomes the one active version.

    A candidate evaluated on the site's films goes through the gate (refused when they speak against it; the
    comparison page takes an override reason).
    """
    from .adaptation import model_version_promote_gated

    model_version_promote_gated(model_version=model_version, actor=actor)
    return model_version_activation_notices(model_version=model_version)
