"""Plot helpers produce images of the right size; the sparseness metric on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from tfmollify.evaluation import metrics, plot


def test_grid_image_size(tmp_path):
    maps = np.random.default_rng(0).normal(size=(3, 4, 10, 10, 3))
    path = tmp_path / "g.png"
    fig = plot.grid(maps, row_labels=list("abc"), col_labels=list("wxyz"),
                    images=maps[:, 0], cell=1.0, path=str(path))
    assert tuple(fig.get_size_inches()) == (5.0, 3.0)
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (360, 600)  # 120 dpi


def test_heatmap_and_overlay():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6, 3))
    im = plot.heatmap(a, signed=False)
    assert im.get_array().shape == (6, 6) and im.get_cmap().name == "magma"
    lo, hi = im.get_clim()
    assert lo == 0 and hi == pytest.approx(np.percentile(np.abs(a).sum(-1), 99))
    im = plot.overlay(rng.uniform(size=(6, 6, 3)), a)
    assert im.get_array().shape == (6, 6)
    with pytest.raises(ValueError, match="same spatial shape"):
        plot.overlay(np.zeros((5, 5)), a)
    with pytest.raises(ValueError, match="attribution"):
        plot.to_map(np.zeros((2, 2, 2, 2)))


def test_sparseness_hand_worked():
    # [1, 2, 3, 4]: sorted v, n = 4, sum = 10; sum (2i - n - 1) v_i = -3 - 2 + 3 + 12 = 10
    # G = 10 / (4 * 10) = 0.25
    got = metrics.sparseness(np.array([[4.0, -1.0, 3.0, 2.0]]))
    assert got[0] == pytest.approx(0.25)
    assert metrics.sparseness(np.zeros((1, 3)))[0] == 0.0
    one_hot = np.zeros((1, 10))
    one_hot[0, 3] = -7.0
    assert metrics.sparseness(one_hot)[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="batch axis"):
        metrics.sparseness(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        metrics.sparseness(np.array([[np.nan, 1.0]]))


def test_sparseness_is_scale_invariant_and_matches_the_mean_difference_form():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 7))
    v = np.abs(a)
    # Gini = sum_ij |v_i - v_j| / (2 n^2 mean(v))
    want = np.abs(v[:, :, None] - v[:, None, :]).sum(axis=(1, 2)) / (2 * 7**2 * v.mean(axis=1))
    np.testing.assert_allclose(metrics.sparseness(a), want, rtol=1e-12)
    np.testing.assert_allclose(metrics.sparseness(5 * a), want, rtol=1e-12)
