"""Augmentation, histogram equalisation and seeded splits of attrrob.data, against independent oracles."""

from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from attrrob.data import augment, augment_to_per_class, equalize_hist, split_per_class, transform_images
from attrrob.data.augment import DRAWS_PER_IMAGE, _bilinear, _homographies, draw_parameters
from attrrob.data.prepare import stratified_test_counts


def _equalize_plane_by_definition(plane: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist written out per value, with exact fractions before float32 rounding."""
    values = plane.ravel().tolist()
    total = len(values)
    lowest = min(values)
    low_count = values.count(lowest)
    if low_count == total:
        return plane.copy()
    scale = np.float32(255.0) / np.float32(total - low_count)
    lut = {}
    for v in range(256):
        below_or_equal = sum(1 for p in values if p <= v)
        lut[v] = int(np.clip(np.rint(np.float32(below_or_equal - low_count) * scale), 0, 255))
    return np.vectorize(lut.get)(plane).astype(np.uint8)


def test_equalize_hist_hand_example():
    # counts 0:2, 1:1, 2:1 → scale 255/2; 1 ↦ rint(127.5) = 128 (half to even), 2 ↦ 255.
    plane = np.array([[[0, 0], [1, 2]]], dtype=np.uint8)
    assert equalize_hist(plane).tolist() == [[[0, 0], [128, 255]]]


def test_equalize_hist_matches_definition_per_plane():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(4, 3, 9, 7), dtype=np.uint8)
    x[0, 0] = 42  # constant plane: unchanged
    x[1, 1] = np.where(rng.random((9, 7)) < 0.5, 10, 200).astype(np.uint8)  # two values
    x[2, 2] = (rng.random((9, 7)) * 20 + 100).astype(np.uint8)  # narrow range gets stretched
    out = equalize_hist(x)
    assert out.dtype == np.uint8 and out.shape == x.shape
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            np.testing.assert_array_equal(out[n, c], _equalize_plane_by_definition(x[n, c]))
    assert (out[0, 0] == 42).all()
    view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, other strides
    np.testing.assert_array_equal(equalize_hist(view), out)
    in_place = x.copy()
    assert equalize_hist(in_place, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, out)
    assert out[2, 2].min() == 0 and out[2, 2].max() == 255


def _params(n, angle=0.5, tx=0.5, ty=0.5, d=0.0, corners=0.5):
    """Uniform draws giving angle 30·(u−0.5)°, shift 5u−2.5 px, warp size ∝ d (0 = none)."""
    p = np.empty((n, DRAWS_PER_IMAGE))
    p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4:] = angle, tx, ty, d, corners
    return p


def test_identity_parameters_leave_images_unchanged():
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    np.testing.assert_array_equal(transform_images(x, _params(3)), x)


def test_integer_translation_shifts_and_fills_with_zero():
    x = np.random.default_rng(1).integers(1, 256, (2, 3, 12, 12), dtype=np.uint8)
    out = transform_images(x, _params(2, tx=0.7, ty=0.3))  # tx = +1, ty = −1 px
    expected = np.zeros_like(x)
    expected[:, :, :-1, 1:] = x[:, :, 1:, :-1]
    np.testing.assert_array_equal(out, expected)


def test_constant_image_stays_constant_under_rotation_and_warp():
    x = np.full((4, 3, 32, 32), 137, dtype=np.uint8)
    params = draw_parameters(np.random.default_rng(5), 4)
    params[:, 1:3] = 0.5  # no translation (its zero border is the one non-constant step)
    out = transform_images(x, params)
    # Bilinear weights sum to 1 only up to rounding and RAR truncates (×255 → uint8), so a value
    # may drop by one, as in skimage; nothing else may change (no border or mixing leaks in).
    assert set(np.unique(out).tolist()) <= {136, 137}


def test_positive_angle_rotates_counter_clockwise():
    x = np.zeros((1, 1, 33, 33), dtype=np.uint8)
    x[0, 0, 16, 28] = 255  # right of the centre (16, 16)
    out = transform_images(x, _params(1, angle=1.0 - 1e-12))  # +15°
    row, col = np.unravel_index(out[0, 0].argmax(), (33, 33))
    assert row < 16 and col > 16  # moved up on screen


def test_bilinear_edge_mode_matches_scipy():
    rng = np.random.default_rng(2)
    img = rng.random((2, 10, 13, 3))
    xs = rng.uniform(-3, 15, (2, 7, 5))
    ys = rng.uniform(-3, 12, (2, 7, 5))
    ours = _bilinear(img, xs, ys, "edge")
    for b in range(2):
        for c in range(3):
            ref = ndimage.map_coordinates(img[b, :, :, c], [ys[b], xs[b]], order=1, mode="nearest")
            np.testing.assert_allclose(ours[b, :, :, c], ref, atol=1e-12)


def test_bilinear_zero_mode_matches_scipy_grid_constant():
    rng = np.random.default_rng(4)
    img = rng.random((1, 8, 9, 1))
    xs = rng.uniform(-2, 10, (1, 6, 6))
    ys = rng.uniform(-2, 9, (1, 6, 6))
    ref = ndimage.map_coordinates(img[0, :, :, 0], [ys[0], xs[0]], order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(_bilinear(img, xs, ys, "zero")[0, :, :, 0], ref, atol=1e-12)


def test_homographies_map_the_four_points():
    rng = np.random.default_rng(6)
    src = np.array([[0, 0], [0, 32], [32, 32], [32, 0]], float) + rng.uniform(-7, 7, (5, 4, 2))
    dst = np.broadcast_to(np.array([[0, 0], [0, 32], [32, 32], [32, 0]], float), src.shape)
    h = _homographies(src, dst)
    mapped = np.einsum("bij,bkj->bki", h, np.concatenate([src, np.ones((5, 4, 1))], axis=2))
    np.testing.assert_allclose(mapped[..., :2] / mapped[..., 2:], dst, atol=1e-9)


def test_transform_is_seeded_and_keeps_shape_and_dtype():
    x = np.random.default_rng(7).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    a = transform_images(x, draw_parameters(np.random.default_rng(11), 6))
    b = transform_images(x, draw_parameters(np.random.default_rng(11), 6))
    c = transform_images(x, draw_parameters(np.random.default_rng(12), 6))
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_transform_does_not_depend_on_chunking(monkeypatch):
    x = np.random.default_rng(8).integers(0, 256, (9, 3, 16, 16), dtype=np.uint8)
    params = draw_parameters(np.random.default_rng(1), 9)
    whole = transform_images(x, params)
    monkeypatch.setattr(augment, "_PIXELS_PER_CHUNK", 2 * 16 * 16)
    np.testing.assert_array_equal(transform_images(x, params), whole)


def test_augment_to_per_class_layout():
    rng = np.random.default_rng(9)
    labels = np.array([2, 0, 2, 1, 0, 2, 2])
    images = rng.integers(0, 256, (7, 3, 8, 8), dtype=np.uint8)
    x, y = augment_to_per_class(images, labels, per_class=5, seed=3)
    assert x.dtype == np.uint8 and x.shape == (15, 3, 8, 8) and y.dtype == np.int64
    assert y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    np.testing.assert_array_equal(x[0:2], images[labels == 0])  # originals first, in order
    np.testing.assert_array_equal(x[5:6], images[labels == 1])
    np.testing.assert_array_equal(x[10:14], images[labels == 2])  # 4 originals, one copy
    x2, _ = augment_to_per_class(images, labels, per_class=5, seed=3)
    np.testing.assert_array_equal(x, x2)
    # per_class below a class's size keeps the class as it is; 0 means no augmentation.
    x0, y0 = augment_to_per_class(images, labels, per_class=0, seed=3)
    assert sorted(y0.tolist()) == sorted(labels.tolist())


def test_split_per_class_counts_and_seed():
    labels = np.repeat(np.arange(4), [10, 7, 5, 9])
    test_counts = np.array([2, 1, 1, 3])
    train, test = split_per_class(labels, test_counts, seed=1)
    assert np.bincount(labels[test], minlength=4).tolist() == test_counts.tolist()
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    again = split_per_class(labels, test_counts, seed=1)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(split_per_class(labels, test_counts, seed=2)[1], test)


@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.33])
def test_stratified_test_counts_total_and_proportions(fraction):
    sizes = np.array([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    counts = stratified_test_counts(sizes, fraction)
    assert counts.sum() == int(np.ceil(Fraction(str(fraction)) * int(sizes.sum())))
    assert np.all(np.abs(counts - sizes * counts.sum() / sizes.sum()) < 1)
