import numpy as np

from ml.gradcam import gradcam, overlay_png


def test_overlay_is_a_png_of_the_input_size():
    from io import BytesIO

    from PIL import Image

    data = overlay_png(np.zeros((32, 32, 1), np.float32), np.linspace(0, 1, 16 * 16).reshape(16, 16).astype(np.float32))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(BytesIO(data))
    assert image.size == (32, 32) and image.mode == "RGB"


def test_gradcam_heatmap_has_input_size_and_unit_range():
    from ml.architectures import build_model

    model = build_model(architecture="tiny", input_size=32)
    image = np.random.default_rng(0).uniform(0, 1, (32, 32, 1)).astype(np.float32)
    heatmap = gradcam(model, image, 1)
    assert heatmap.shape == (32, 32)
    assert heatmap.min() >= 0 and heatmap.max() <= 1
