"""`tfm.plot` upsamples a coarse map (Grad-CAM at a layer, [h, w]) to its image for overlays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: before pyplot is imported anywhere

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf

from tfmollify.evaluation import plot


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize(("small", "big"), [((3, 3), (24, 24)), ((2, 5), (7, 11)),
                                            ((1, 1), (4, 6)), ((4, 4), (4, 9))])
def test_upsample_has_the_image_shape_and_equals_tf_image_resize(small, big):
    m = np.random.default_rng(0).normal(size=small)
    got = plot.upsample(m, big)
    assert got.shape == big and got.dtype == np.float64
    want = tf.image.resize(m[None, ..., None], big, method="bilinear").numpy()[0, ..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a convex combination of neighbours: the range is kept
    assert m.min() - 1e-12 <= got.min() and got.max() <= m.max() + 1e-12


def test_a_constant_map_stays_exactly_constant():
    got = plot.upsample(np.full((3, 4), 0.37), (24, 32))
    assert np.array_equal(got, np.full((24, 32), 0.37))


def test_a_map_at_the_image_size_is_unchanged():
    m = np.random.default_rng(1).normal(size=(8, 8))
    assert np.array_equal(plot.upsample(m, (8, 8)), m)
    # the overlay draws |a| as it is, no resampling
    im = plot.overlay(np.random.default_rng(2).uniform(size=(8, 8, 3)), m)
    assert np.array_equal(np.asarray(im.get_array()), np.abs(m))


def test_overlay_upsamples_a_grad_cam_map_to_the_image():
    image = np.random.default_rng(3).uniform(size=(24, 24, 1))
    cam = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
    im = plot.overlay(image, cam)
    drawn = np.asarray(im.get_array())
    assert drawn.shape == (24, 24)
    np.testing.assert_allclose(drawn, plot.upsample(cam, (24, 24)))
    # by hand: output pixel i samples the map at (i + 0.5) / 8 - 0.5 (clamped to [0, 2]);
    # corners are the corner cells, and row 11 (0.9375) at column 23 (2) mixes cam[0, 2] and
    # cam[1, 2]: 0.0625 * 2 + 0.9375 * 4, the largest value drawn
    assert drawn[0, 0] == 0.0 and drawn[23, 23] == 1.0 and drawn[23, 0] == 1.0
    np.testing.assert_allclose(drawn[11, 23], 0.0625 * 2.0 + 0.9375 * 4.0)
    assert drawn.max() == pytest.approx(3.875)


def test_a_map_larger_than_the_image_or_not_2d_is_refused():
    with pytest.raises(ValueError, match="coarser"):
        plot.overlay(np.zeros((8, 8)), np.zeros((9, 8)))
    with pytest.raises(ValueError, match="2-D map"):
        plot.upsample(np.zeros((2, 2, 2)), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        plot.upsample(np.zeros((2, 2)), (0, 4))
