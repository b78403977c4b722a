"""The training recipe: one object, saved with the artifact, from which serving reads the preprocessing."""

import dataclasses
import json
from pathlib import Path

import pytest

from ml.serving.artifact import ArtifactMetadata, load_metadata, save_metadata
from ml.serving.preprocess import PreprocessConfig
from ml.training.recipe import RECIPES, Recipe, recipe_for

ARTIFACTS = Path(__file__).resolve().parents[3] / "ml" / "artifacts"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_survives_the_round_trip_through_metadata_json(name):
    recipe = RECIPES[name]
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


@pytest.mark.parametrize("name", ["production", "seed"])
def test_named_recipe_is_the_one_the_shipped_artifact_was_trained_with(name):
    # The shipped artifacts predate saved recipes: the loader derives theirs from what they recorded
    # (everything but the early-stopping patience).
    shipped = Recipe.from_dict(load_metadata(ARTIFACTS / name).recipe)
    assert shipped == dataclasses.replace(RECIPES[name], patience=shipped.patience)


def test_shipped_artifact_metadata_json_is_read_unchanged():
    metadata = load_metadata(ARTIFACTS / "production")
    assert metadata.preprocess_config == RECIPES["production"].preprocessing
    assert json.loads((ARTIFACTS / "production" / "metadata.json").read_text())["preprocessing"] == metadata.preprocessing


def test_serving_reads_the_preprocessing_from_the_recipe_not_the_architecture_name(tmp_path):
    # A sepres network on whole films: nothing about the name may switch the lung crop on.
    recipe = dataclasses.replace(RECIPES["production"], preprocessing=PreprocessConfig(input_size=96))
    save_metadata(artifact_dir=tmp_path, metadata=ArtifactMetadata(
        name="x", version="1", architecture="sepres-wide", class_names=["covid", "normal", "pneumonia"],
        input_size=96, temperature=1.0, covid_threshold=0.5, target_sensitivity=0.95, metrics={}, sha256="0",
        recipe=recipe.to_dict(),
    ))
    saved = json.loads((tmp_path / "metadata.json").read_text())
    assert "preprocessing" not in saved and saved["recipe"]["preprocessing"]["crop"] == "none"
    assert load_metadata(tmp_path).preprocess_config == PreprocessConfig(input_size=96)


def test_recipe_for_changes_single_fields_and_the_input_size_of_the_preprocessing():
    recipe = recipe_for("production", input_size=192, epochs=5)
    assert recipe.input_size == recipe.preprocessing.input_size == 192 and recipe.epochs == 5
    assert recipe.preprocessing.crop == "lungs" and recipe.architecture == "sepres-wide"


def test_recipe_refuses_an_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer"):
        recipe_for("tiny", optimizer="sgd")
