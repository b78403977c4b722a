"""Pictures made from a study's stored files, for the places that cannot lay one image over another as the study
page does (the PDF report, the DICOM secondary capture sent to the PACS)."""

import io

from PIL import Image

from diagnosis.models import Prediction

from . import storage


def film_with_heatmap(prediction: Prediction, *, opacity: float = 0.5) -> Image.Image:
    """The film's preview with the heatmap layer over the crop box the model saw, as on the study page (RGB).

    Predictions from before heatmap layers have the model input with the heatmap blended in: that comes as is.
    Raises what storage raises for a missing or unreadable file.
    """
    if not prediction.heatmap_box:
        return Image.open(io.BytesIO(storage.blob_get(prediction.heatmap_sha256, kind=storage.HEATMAP))).convert("RGB")
    film = Image.open(io.BytesIO(storage.blob_get(prediction.study.image.sha256, kind=storage.PREVIEW))).convert("RGBA")
    layer = Image.open(io.BytesIO(storage.blob_get(prediction.heatmap_sha256, kind=storage.HEATMAP_LAYER)))
    box = prediction.heatmap_box
    left, top = round(box["left"] * film.width), round(box["top"] * film.height)
    size = (max(1, round(box["right"] * film.width) - left), max(1, round(box["bottom"] * film.height) - top))
    layer = layer.convert("RGBA").resize(size, Image.Resampling.BILINEAR)
    layer.putalpha(layer.getchannel("A").point(lambda alpha: round(alpha * opacity)))
    film.alpha_composite(layer, dest=(left, top))
    return film.convert("RGB")
