import subprocess
import sys

from ml.serving.gradcam import GRADCAM_LAYER
from ml.training.architectures import ARCHITECTURES, build_model, build_sepres


def test_seed_matches_its_published_shape():
    model = build_model(architecture="seed", input_size=256)
    convolutions = [layer for layer in model.layers if layer.name.startswith("conv")]
    assert [layer.filters for layer in convolutions] == [8, 16, 32, 16, 32, 64, 32, 64, 128, 64]
    assert model.get_layer("flatten").output.shape[-1] == 16 * 16 * 64
    assert model.output_shape == (None, 3)


def test_every_architecture_exposes_gradcam_and_logits_layers():
    for architecture in ARCHITECTURES:
        model = build_model(architecture=architecture, input_size=64)
        assert model.get_layer(GRADCAM_LAYER) is not None and model.get_layer("logits") is not None


def test_sepres_wide_doubles_every_layer():
    narrow = build_sepres(input_size=64, num_classes=3)
    wide = build_model(architecture="sepres-wide", input_size=64)
    assert [layer.name for layer in narrow.layers] == [layer.name for layer in wide.layers]
    assert wide.get_layer(GRADCAM_LAYER).output.shape[-1] == 2 * narrow.get_layer(GRADCAM_LAYER).output.shape[-1] == 256
    assert wide.get_layer("stem_conv").filters == 48


def test_tiny_has_a_few_thousand_parameters():
    assert build_model(architecture="tiny", input_size=64).count_params() < 5000


def test_importing_serving_modules_does_not_load_tensorflow_or_django():
    code = (
        "import sys, ml.serving.preprocess, ml.serving.predictor, ml.evaluation.datasets, ml.serving.artifact, "
        "ml.serving.calibration, ml.training.augment, ml.serving.gradcam, ml.training.export, "
        "ml.training.architectures, ml.training.train, ml.serving.segmentation; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'django' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False", "False"]
