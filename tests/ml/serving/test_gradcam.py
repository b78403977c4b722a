import numpy as np

from ml.serving.gradcam import gradcam, overlay_png


def test_overlay_is_a_png_of_the_input_size():
    from io import BytesIO

    from PIL import Image

    data = overlay_png(np.zeros((32, 32, 1), np.float32), np.linspace(0, 1, 16 * 16).reshape(16, 16).astype(np.float32))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(BytesIO(data))
    assert image.size == (32, 32) and image.mode == "RGB"


def test_gradcam_heatmap_has_input_size_and_unit_range():
    from ml.training.architectures import build_model

    model = build_model(architecture="tiny", input_size=32)
    image = np.random.default_rng(0).uniform(0, 1, (32, 32, 1)).astype(np.float32)
    heatmap = gradcam(model, image, 1)
    assert heatmap.shape == (32, 32)
    assert heatmap.min() >= 0 and heatmap.max() <= 1


def test_cam_tflite_gives_the_keras_grad_cam_without_tensorflow(tiny_model_dir, tmp_path):
    """A pooling + Dense head ships cam.tflite; the worker's heatmap then needs no TensorFlow."""
    import json
    import subprocess
    import sys

    from ml.serving.artifact import load_metadata
    from ml.serving.predictor import Predictor

    metadata = load_metadata(tiny_model_dir)
    assert metadata.cam_file == "cam.tflite" and (tiny_model_dir / "cam.tflite").is_file()
    predictor = Predictor.load(tiny_model_dir)
    rng = np.random.default_rng(3)
    for _ in range(3):
        image = rng.uniform(0, 1, (metadata.input_size, metadata.input_size, 1)).astype(np.float32)
        for class_index in range(3):
            assert np.abs(predictor.heatmap(image, class_index) - gradcam(predictor.keras_model, image, class_index)).max() <= 1e-4

    code = (
        "import sys, json, numpy as np; from ml.serving.predictor import Predictor; "
        f"p = Predictor.load({str(tiny_model_dir)!r}); "
        "r = p.predict_one(np.random.default_rng(0).uniform(0, 1, (80, 80)).astype(np.float32), with_heatmap=True); "
        "print(json.dumps([r.heatmap.shape[0], float(r.heatmap.max()), 'tensorflow' in sys.modules, 'keras' in sys.modules]))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    size, peak, tensorflow_loaded, keras_loaded = json.loads(output.strip().splitlines()[-1])
    assert size == metadata.input_size and 0 < peak <= 1
    assert not tensorflow_loaded and not keras_loaded


def test_tampered_cam_file_is_refused(tiny_model_dir, tmp_path):
    import shutil

    import pytest

    from ml.serving.predictor import Predictor

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "cam.tflite").write_bytes((copy / "cam.tflite").read_bytes() + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        Predictor.load(copy)


def test_heads_that_are_not_pooling_plus_dense_have_no_cam_model():
    from ml.serving.gradcam import cam_model
    from ml.training.architectures import build_model

    assert cam_model(build_model(architecture="seed", input_size=64)) is None
    maps = cam_model(build_model(architecture="sepres-wide", input_size=64))
    assert maps is not None and maps.output_shape == (None, 4, 4, 3)


def test_heat_layer_is_transparent_where_cold_and_takes_the_crop_boxs_aspect():
    import io

    from PIL import Image

    from ml.serving.gradcam import heat_layer_png

    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 4:8] = 1.0
    stored = Image.open(io.BytesIO(heat_layer_png(heat, width=60, height=30)))
    assert stored.mode == "P" and stored.size == (60, 30)  # one byte a pixel, alpha in the palette
    layer = np.asarray(stored.convert("RGBA"))
    alpha = layer[..., 3]
    assert alpha[0, 0] == 0 and alpha[:, 15:30].max() > 200
    hottest = np.unravel_index(alpha.argmax(), alpha.shape)
    assert tuple(layer[hottest][:3]) == (128, 0, 0)  # the hot end of jet: dark red


def test_crop_box_says_where_on_the_film_the_lung_crop_lies():
    from ml.serving.preprocess import CropBox, PreprocessConfig, preprocess_located

    film = np.zeros((200, 300), np.float32)
    whole = preprocess_located(film, PreprocessConfig(input_size=32))[2]
    assert whole == CropBox()
    cropped = preprocess_located(film, PreprocessConfig(input_size=32, crop="lungs", lung_segmenter="lung_segmenter"))[2]
    assert 0.0 <= cropped.top < cropped.bottom <= 1.0 and 0.0 <= cropped.left < cropped.right <= 1.0
    assert cropped != CropBox()
