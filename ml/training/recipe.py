"""A training recipe: everything that decides how a network is trained, in one object saved with the artifact.

``Recipe.to_dict()`` goes into metadata.json under ``"recipe"``; serving and evaluation read the preprocessing
from there (``ArtifactMetadata.preprocess_config``), never from the architecture's name. ``RECIPES`` names the
recipes the shipped artifacts were trained with; ``python -m ml train --recipe NAME`` starts from one and its
flags change single fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ml.serving.preprocess import PreprocessConfig
from ml.training.augment import LIGHT, STRONG, AugmentConfig

OPTIMIZERS = ("adam",)


@dataclass(frozen=True)
class Recipe:
    architecture: str
    preprocessing: PreprocessConfig
    augmentation: AugmentConfig
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 40  # at most: early stopping on the validation loss ends most runs sooner
    patience: int = 6
    seed: int = 7
    # The COVID-19 alert threshold must reach this sensitivity on validation at this one-sided confidence
    # (Clopper-Pearson lower bound; None: the point estimate).
    target_sensitivity: float = 0.95
    threshold_confidence: float | None = 0.95

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 < self.target_sensitivity < 1:
            raise ValueError("target_sensitivity must lie strictly between 0 and 1")

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "preprocessing": self.preprocessing.to_dict(),
            "augmentation": self.augmentation.to_dict(),
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "patience": self.patience,
            "seed": self.seed,
            "target_sensitivity": self.target_sensitivity,
            "threshold_confidence": self.threshold_confidence,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        """A recipe as saved; fields an older artifact did not record keep this class's defaults."""
        augmentation = dict(data.get("augmentation") or {})
        if "zoom_range" in augmentation:
            augmentation["zoom_range"] = tuple(augmentation["zoom_range"])
        scalars = {key: data[key] for key in ("optimizer", "learning_rate", "batch_size", "epochs", "patience", "seed",
                                             "target_sensitivity", "threshold_confidence") if key in data}
        return cls(architecture=data["architecture"], preprocessing=PreprocessConfig.from_dict(data["preprocessing"]),
                   augmentation=AugmentConfig(**augmentation), **scalars)


# The production recipe reads only the lung fields: cropped to them, everything outside blank.
LUNG_SEGMENTER = "lung_segmenter"
LUNGS_ONLY = PreprocessConfig(input_size=160, equalize="histogram", crop="lungs", mask_outside_lungs=True,
                              lung_segmenter=LUNG_SEGMENTER, equalize_region="frame")

RECIPES = {
    # ml/artifacts/production (cxr-sepres-wide-lungs 1); MODEL_CARD.md, "Reproduce".
    "production": Recipe(architecture="sepres-wide", preprocessing=LUNGS_ONLY, augmentation=STRONG, epochs=50,
                         patience=10),
    # ml/artifacts/seed: the baseline, the whole film at 256 px.
    "seed": Recipe(architecture="seed", preprocessing=PreprocessConfig(input_size=256), augmentation=LIGHT,
                   epochs=30),
    # A few thousand parameters on 64 px: trains in seconds, for tests. Patience as long as training, so a
    # synthetic set always trains every epoch.
    "tiny": Recipe(architecture="tiny", preprocessing=PreprocessConfig(input_size=64), augmentation=LIGHT,
                   batch_size=16, epochs=3, patience=3),
}


def recipe_for(name: str, **changes) -> Recipe:
    """A named recipe with some fields changed (``input_size`` changes the preprocessing's)."""
    recipe = RECIPES[name]
    input_size = changes.pop("input_size", None)
    if input_size is not None:
        changes["preprocessing"] = replace(recipe.preprocessing, input_size=input_size)
    return replace(recipe, **changes)
