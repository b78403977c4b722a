import numpy as np

from ml.training.augment import STRONG, augment_film, augment_geometry


def test_film_augmentation_keeps_shape_and_range():
    rng = np.random.default_rng(0)
    film = rng.uniform(0, 1, (120, 100)).astype(np.float32)
    for _ in range(20):
        out = augment_film(film, rng)
        assert out.shape == film.shape and out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 1


def test_geometry_augmentation_keeps_shape_and_is_seeded():
    image = np.random.default_rng(1).uniform(0, 1, (64, 64, 1)).astype(np.float32)
    first = augment_geometry(image, np.random.default_rng(2), STRONG)
    second = augment_geometry(image, np.random.default_rng(2), STRONG)
    assert first.shape == (64, 64, 1)
    assert np.array_equal(first, second)

