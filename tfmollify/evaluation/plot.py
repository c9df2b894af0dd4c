"""Pictures of attributions: heatmaps, overlays and method x example grids (matplotlib).

matplotlib is an optional dependency (``pip install "tfmollify[demo]"``); it is imported when a
function here is first called.

Signed maps use a diverging colormap centred on zero; absolute maps a sequential one. Both are
clipped at a percentile of ``|attribution|`` so that a few extreme pixels do not wash the rest out.
A map coarser than its image (Grad-CAM's ``[h, w]`` at a convolutional layer) is upsampled
bilinearly to the image's size for an :func:`overlay` (:func:`upsample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["generation", "grid", "heatmap", "overlay", "to_map", "upsample"]


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "tfmollify.evaluation.plot needs matplotlib: pip install 'tfmollify[demo]'"
        ) from exc
    return plt


def to_map(attribution: Any, signed: bool = True) -> np.ndarray:
    """Reduces an attribution to a 2-D map.

    Channels (a trailing axis of size 1, 3 or 4 on a 3-D array) are summed for a signed map and
    their absolute values summed for an absolute one.

    Args:
        attribution: ``[H, W]`` or ``[H, W, C]`` array (or a 1-D vector, shown as one row).
        signed: Keep the sign.

    Returns:
        A float64 ``[H, W]`` array.
    """
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim == 3:
        a = a.sum(axis=-1) if signed else np.abs(a).sum(axis=-1)
    elif not signed:
        a = np.abs(a)
    if a.ndim != 2:
        raise ValueError(
            f"Argument `attribution` must be 1-D, [H, W] or [H, W, C]. Received shape {a.shape}"
        )
    return a


def _axis_weights(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows ``lo``, ``hi`` and the weight of ``hi`` for each of ``out`` output rows
    (half-pixel centres, edges clamped)."""
    src = (np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5
    src = np.clip(src, 0.0, size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    return lo, hi, src - lo


def upsample(attribution: Any, shape: Sequence[int]) -> np.ndarray:
    """Resizes a 2-D map to ``shape`` by bilinear interpolation (for overlays).

    Pixel centres are aligned as in ``tf.image.resize(..., method="bilinear")`` (half-pixel
    centres, no antialiasing), whose result this equals: every output value is a convex
    combination of at most four neighbouring map values, so a constant map stays exactly
    constant and the map's range is kept. A map that already has ``shape`` comes back unchanged.

    Args:
        attribution: ``[h, w]`` map (e.g. Grad-CAM at a layer's resolution).
        shape: ``(H, W)``, the image's spatial size.

    Returns:
        A float64 ``[H, W]`` array.

    Raises:
        ValueError: If ``attribution`` is not 2-D or ``shape`` is not two positive ints.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation import plot
    >>> plot.upsample(np.array([[0.0, 1.0]]), (1, 4)).tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    m = np.asarray(attribution, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(
            f"Argument `attribution` must be a 2-D map [h, w]. Received shape {m.shape}"
        )
    try:
        rows, cols = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"Argument `shape` must be (H, W), two positive ints. Received: shape={shape!r}"
        ) from None
    if rows < 1 or cols < 1 or m.size == 0:
        raise ValueError(
            f"Argument `shape` must be (H, W), two positive ints, and the map non-empty. "
            f"Received: shape={shape!r}, map shape {m.shape}"
        )
    if m.shape == (rows, cols):
        return m
    r0, r1, rw = _axis_weights(m.shape[0], rows)
    c0, c1, cw = _axis_weights(m.shape[1], cols)
    top = m[r0][:, c0] * (1.0 - cw) + m[r0][:, c1] * cw
    bottom = m[r1][:, c0] * (1.0 - cw) + m[r1][:, c1] * cw
    return top * (1.0 - rw[:, None]) + bottom * rw[:, None]


def heatmap(
    attribution: Any,
    ax: Any = None,
    *,
    signed: bool = True,
    clip_percentile: float = 99.0,
    title: str | None = None,
) -> Any:
    """Draws one attribution map.

    Args:
        attribution: ``[H, W]`` or ``[H, W, C]``.
        ax: A matplotlib Axes (a new figure when None).
        signed: Diverging colormap (``bwr``) centred on 0; else sequential (``magma``) of ``|a|``.
        clip_percentile: Colour limits at this percentile of ``|a|``.
        title: Axes title.

    Returns:
        The AxesImage.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation import plot
    >>> im = plot.heatmap(np.random.default_rng(0).normal(size=(8, 8)))
    >>> im.get_cmap().name
    'bwr'
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    m = to_map(attribution, signed)
    finite = np.abs(m[np.isfinite(m)])
    lim = float(np.percentile(finite, clip_percentile)) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    if signed:
        im = ax.imshow(m, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        im = ax.imshow(m, cmap="magma", vmin=0.0, vmax=lim, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return im


def overlay(
    image: Any,
    attribution: Any,
    ax: Any = None,
    *,
    alpha: float = 0.6,
    clip_percentile: float = 99.0,
    title: str | None = None,
) -> Any:
    """Draws ``|attribution|`` over a grey-scale copy of ``image``.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` image (any range; it is min-max scaled).
        attribution: The same spatial shape ``[H, W]`` (or ``[H, W, C]``), or a coarser map
            ``[h, w]`` with ``h <= H`` and ``w <= W``, such as Grad-CAM at a convolutional
            layer: it is upsampled bilinearly to ``[H, W]`` (:func:`upsample`).
        ax: A matplotlib Axes (a new figure when None).
        alpha: Opacity of the heatmap.
        clip_percentile: Colour limit at this percentile of ``|a|``.
        title: Axes title.

    Returns:
        The heatmap AxesImage (its array is the drawn ``[H, W]`` map).

    Raises:
        ValueError: If the map is larger than the image along an axis.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation import plot
    >>> cam = np.array([[0.0, 1.0], [2.0, 3.0]])          # Grad-CAM at a 2x2 layer
    >>> plot.overlay(np.zeros((8, 8)), cam).get_array().shape
    (8, 8)
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    span = img.max() - img.min()
    img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    ax.imshow(img, cmap="gray", interpolation="nearest")
    m = to_map(attribution, signed=False)
    if m.shape != img.shape:
        if m.shape[0] > img.shape[0] or m.shape[1] > img.shape[1]:
            raise ValueError(
                f"`image` {img.shape} and `attribution` {m.shape} must have the same spatial "
                "shape, or the attribution a coarser one [h, w] (upsampled to the image's)."
            )
        m = upsample(m, img.shape)
    lim = float(np.percentile(m, clip_percentile)) or 1.0
    im = ax.imshow(m, cmap="inferno", alpha=alpha, vmin=0.0, vmax=lim, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return im


def grid(
    rows: Sequence[Sequence[Any]],
    *,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    signed: Sequence[bool] | bool = True,
    images: Sequence[Any] = (),
    cell: float = 1.6,
    path: str | None = None,
    title: str | None = None,
) -> Any:
    """A grid of attribution maps: one row per method (or example), one column per item.

    Args:
        rows: ``rows[i][j]`` is an attribution map (or None for an empty cell).
        row_labels: Label of each row.
        col_labels: Title of each column.
        signed: Per column (or for all): diverging signed map, or sequential ``|a|``.
        images: Optional input image per row, drawn in an extra first column.
        cell: Size of one cell in inches.
        path: Save the figure here (PNG at 120 dpi) when given.
        title: Figure title.

    Returns:
        The matplotlib Figure.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation import plot
    >>> maps = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    >>> fig = plot.grid(maps, row_labels=["a", "b"], col_labels=["x", "y", "z"])
    >>> [round(v) for v in fig.get_size_inches() / 1.6]
    [3, 2]
    """
    plt = _plt()
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows) if len(rows) else 0
    extra = 1 if len(images) else 0
    fig, axes = plt.subplots(
        n_rows, n_cols + extra, figsize=(cell * (n_cols + extra), cell * n_rows), squeeze=False
    )
    flags = [signed] * n_cols if isinstance(signed, bool) else list(signed)
    for i, row in enumerate(rows):
        if extra:
            img = np.asarray(images[i], dtype=np.float64)
            axes[i, 0].imshow(img.mean(axis=-1) if img.ndim == 3 else img, cmap="gray")
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
            if i == 0:
                axes[i, 0].set_title("input", fontsize=8)
        for j in range(n_cols):
            ax = axes[i, j + extra]
            a = row[j] if j < len(row) else None
            if a is None:
                ax.axis("off")
                continue
            heatmap(a, ax, signed=flags[j], title=col_labels[j] if i == 0 and col_labels else None)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def generation(result: Any, example: int = 0, *, ax: Any = None) -> Any:
    """Draws a generation's attributions (:func:`tfmollify.explain_generation`): generated
    tokens (rows) x the tokens before them (columns), with the token strings.

    Args:
        result: A :class:`tfmollify.GenerationExplanation`.
        example: Which example of the batch.
        ax: A matplotlib Axes (a new figure when None).

    Returns:
        The matplotlib Figure (``fig.savefig("generation.png")``).

    Raises:
        ValueError: For an ``example`` outside the batch.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.evaluation import plot
    >>> ids = keras.Input((None,), dtype="int32")
    >>> emb = keras.layers.Embedding(20, 4, name="emb")(ids)
    >>> lm = keras.Model(ids, keras.layers.Dense(20)(emb))
    >>> e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=4, seed=0)
    >>> r = tfm.explain_generation(e, [[1, 2, 3]], continuation_ids=[[4, 5]])
    >>> fig = plot.generation(r)
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['4', '5']
    """
    plt = _plt()
    b = result.token_ids.shape[0]
    if not 0 <= example < b:
        raise ValueError(f"Argument `example` must be in [0, {b}). Received: {example!r}")
    keep = np.flatnonzero(result.context_mask[example])
    gen = np.flatnonzero(result.generated_mask[example])
    labels = result.labels()[example]
    m = np.asarray(result.attributions[example])[np.ix_(keep, gen)].T  # [G, context]
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(keep) + 2), 0.35 * len(gen) + 1.8))
    else:
        fig = ax.figure
    signed = bool((m < 0).any())
    lim = float(np.abs(m).max()) or 1.0
    im = ax.imshow(m, cmap="bwr" if signed else "magma", vmin=-lim if signed else 0.0,
                   vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(keep)), [labels[k] for k in keep], rotation=90, fontsize=7)
    ax.set_yticks(range(len(gen)), [labels[result.prompt_length + j] for j in gen], fontsize=7)
    ax.axvline(int((keep < result.prompt_length).sum()) - 0.5, color="0.5", lw=0.8)
    ax.set_xlabel("context (prompt | generated)")
    ax.set_ylabel("generated token")
    s = result.settings
    ax.set_title(f"{s.get('mode', '')} {s.get('kernel', '')}, {s.get('attribution', '')}, "
                 f"reduce={s.get('reduce', '')}, score={s.get('score', '')}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig
