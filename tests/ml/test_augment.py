import numpy as np

from ml.augment import STRONG, augment_film, augment_geometry


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


def test_downscale_augmentation_shows_films_at_lower_resolution_and_is_off_by_default():
    film = np.random.default_rng(3).uniform(0, 1, (400, 320)).astype(np.float32)
    shapes = {augment_film(film, np.random.default_rng(seed), downscale_probability=1.0).shape for seed in range(10)}
    for height, width in shapes:  # 35-100% of the resolution, same proportions
        assert 140 <= height <= 400 and abs(width - 320 * height / 400) <= 1
    assert len(shapes) > 1
    # Off (the default), it draws nothing: the shipped recipe's random stream is unchanged.
    assert np.array_equal(augment_film(film, np.random.default_rng(4)),
                          augment_film(film, np.random.default_rng(4), downscale_probability=0.0))
    assert augment_film(film, np.random.default_rng(4)).shape == film.shape
