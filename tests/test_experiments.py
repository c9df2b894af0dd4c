"""The Table 1 runner: exact boxes in the generated set, table layout, a tiny end-to-end run."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest

from tfmollify.evaluation.experiments import table1
from tfmollify.interface import cli

TINY = table1.Settings(num_examples=4, num_samples=2, num_weight_samples=2, fg_samples=1,
                       mlp_epochs=1, cnn_epochs=1, canvas=28, copies=1, seed=3)
#: the end-to-end run scores two kernels (7 methods x 4 models: 28 explainers, not 60); every
#: kernel's estimator is tested on its own elsewhere
TWO_KERNELS = ("gaussian", "rect")


def test_cluttered_digits_boxes_are_exact():
    # synthetic "digits": a block of ones at a known place inside a 10x10 image; the clutter
    # (noise < 0.2, fragments scaled by < 1) never reaches 1, so the ones mark the digit exactly
    images = np.zeros((5, 10, 10, 1), np.float32)
    blocks = [(1, 2, 4, 7), (0, 0, 10, 10), (5, 5, 6, 6), (2, 3, 9, 4), (7, 1, 10, 3)]
    for img, (y0, x0, y1, x1) in zip(images, blocks, strict=True):
        img[y0:y1, x0:x1] = 1.0
    x, y, boxes = table1.cluttered_digits(images, np.arange(5), canvas=30, copies=3,
                                          fragments=4, seed=1)
    assert x.shape == (15, 30, 30, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y, np.repeat(np.arange(5), 3))
    for i in range(15):
        y0, x0, y1, x1 = boxes[i]
        ones = np.argwhere(x[i, ..., 0] == 1.0)
        assert (ones.min(0).tolist(), (ones.max(0) + 1).tolist()) == ([y0, x0], [y1, x1])
        b = blocks[i // 3]
        assert (y1 - y0, x1 - x0) == (b[2] - b[0], b[3] - b[1])
    # positions and clutter vary between copies, and the fragments are there
    assert len({tuple(b) for b in boxes[3:6]}) > 1
    assert np.sum((x > 0.2) & (x < 1.0)) > 0
    with pytest.raises(ValueError, match="canvas"):
        table1.cluttered_digits(images, np.arange(5), canvas=8)


def test_markdown_layout_and_best_kernels():
    table = {row: {c: None for c in table1.COLUMNS} for row in table1.ROWS}
    for i, row in enumerate(table1.KERNELS):
        for c in table1.COLUMNS:
            table[row][c] = 0.1 * (i + 1)
    for c in table1.COLUMNS:
        if c.endswith("_sg"):
            table["original"][c] = 0.5
    table["rect"]["invariance_sg"] = table["hyperbolic"]["invariance_sg"] = 0.9
    best = table1.best_kernels(table)
    assert best["consistency_sg"] == ["gaussian"]  # lower is better
    assert best["sparseness_fg"] == ["rect"]  # higher is better
    assert best["invariance_sg"] == ["hyperbolic", "rect"]  # a tie: both
    md = table1.markdown_table(table).splitlines()
    assert len(md) == 2 + 6
    assert md[0].startswith("| Kernel | Consistency↓ SG | Consistency↓ NG | Consistency↓ FG |")
    assert md[2].startswith("| Gaussian | **0.1000** | **0.1000** | **0.1000** | 0.1000 |")
    assert md[-1] == "| Original | 0.5000 |  |  | 0.5000 |  |  | 0.5000 |  |  | 0.5000 |  |  |"


def test_bad_data_and_arguments(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 4, 4, 1)))
    with pytest.raises(ValueError, match="must hold arrays `x`"):
        table1.run(str(tmp_path / "out"), data=str(tmp_path / "bad.npz"), settings=TINY)
    with pytest.raises(ValueError, match="is not a file"):
        table1.run(str(tmp_path / "out"), data=str(tmp_path / "missing.npz"), settings=TINY)
    assert cli.main(["table1", "--examples", "1", "--out", str(tmp_path / "o")]) == 2
    for bad in ((), ("gaussian", "laplace"), "gaussian"):
        with pytest.raises(ValueError, match=r"`kernels` must be a non-empty tuple of names"):
            table1.run(str(tmp_path / "out"), settings=dataclasses.replace(TINY, kernels=bad))
    assert cli.main(["table1", "--kernels", "gaussian,laplace", "--out", str(tmp_path / "o")]) == 2


def test_kernels_argument_reaches_the_settings():
    args = table1.build_parser().parse_args(["--quick", "--kernels", "rect, gaussian"])
    assert table1.settings_from_args(args).kernels == ("rect", "gaussian")
    args = table1.build_parser().parse_args(["--quick"])
    assert table1.settings_from_args(args).kernels == table1.KERNELS


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_tiny_run_writes_the_table(tmp_path, capsys):
    paths = table1.run(str(tmp_path / "t1"),
                       settings=dataclasses.replace(TINY, kernels=TWO_KERNELS))
    out, err = capsys.readouterr()
    assert "[table1] [ 7/7] fg/rect" in err  # progress goes to stderr
    assert out.startswith("| Kernel | Consistency↓ SG")  # the table to stdout

    rows = _read_csv(paths["csv"])
    assert rows[0] == ["kernel"] + [f"{m}_{mode}" for m in table1.METRICS
                                    for mode in ("sg", "ng", "fg")]
    assert [r[0] for r in rows[1:]] == [*table1.KERNELS, "original"]
    for r in rows[1:6]:
        if r[0] not in TWO_KERNELS:  # a kernel not scored: an empty row
            assert r[1:] == [""] * len(r[1:])
            continue
        values = [float(v) for v in r[1:]]
        assert all(math.isfinite(v) for v in values)
    original = dict(zip(rows[0], rows[-1], strict=True))
    for metric in table1.METRICS:
        assert original[f"{metric}_ng"] == original[f"{metric}_fg"] == ""
    # exact oracle: the raw gradient of the bias-compensated model is the same map
    assert float(original["invariance_sg"]) == pytest.approx(1.0, abs=1e-6)
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:6] if r[0] in TWO_KERNELS])
    cols = {c: j for j, c in enumerate(rows[0][1:])}
    loc = values[:, [cols[f"localization_{m}"] for m in ("sg", "ng", "fg")]]
    assert np.all((loc >= 0) & (loc <= 1))
    # four examples, k = 5: every mean is a multiple of 1 / 20
    np.testing.assert_allclose(loc * 20, np.round(loc * 20), atol=1e-9)
    for m in ("consistency", "invariance"):
        v = values[:, [cols[f"{m}_{mode}"] for mode in ("sg", "ng", "fg")]]
        assert np.all(np.abs(v) <= 1)

    scores = np.load(paths["scores"])
    assert len(scores.files) == 7 * 4
    assert all(scores[k].shape == (4,) for k in scores.files)

    md = open(paths["markdown"]).read()
    assert "| Original |" in md and "![Fig. 8](fig8.png)" in md
    assert "| Poisson |  |  |" in md  # not scored: empty cells
    import matplotlib.image

    img = matplotlib.image.imread(paths["figure"])
    assert img.shape[0] < img.shape[1]  # 3 mode rows x 7 columns


def test_cli_subcommand_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["table1", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tfmollify table1" in out and "--quick" in out and "--data" in out
    args = cli.build_parser().parse_args(["table1", "--quick", "--examples", "7"])
    s = table1.settings_from_args(args)
    assert s == table1.dataclasses.replace(table1.QUICK, num_examples=7, seed=0)


@pytest.mark.slow
def test_input_range_option_bounds_sg_and_fg_noise_and_moves_with_the_shift():
    import keras

    args = table1.build_parser().parse_args(["--quick", "--input-range", "0", "1"])
    s = table1.settings_from_args(args)
    assert s.input_range == (0.0, 1.0) and table1.Settings().input_range is None
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).uniform(0, 1, (3, 6)).astype(np.float32)
    t = np.array([0, 1, 0])
    import tfmollify as tfm

    explain = table1._explain_fn("sg/rect", s)
    want = tfm.SmoothGrad(model, kernel="rect", num_samples=s.num_samples, seed=s.seed,
                          input_range=(0, 1))(x, t)
    np.testing.assert_allclose(explain(model, x, t), want, rtol=1e-6)
    # Invariance explains x + c: the range moves with it (else x - 1 lies outside (0, 1))
    shifted = tfm.SmoothGrad(model, kernel="rect", num_samples=s.num_samples, seed=s.seed,
                             input_range=(-1, 0))(x - 1, t)
    np.testing.assert_allclose(explain(model, x - 1, t, offset=-1.0), shifted, rtol=1e-6)
    with pytest.raises(ValueError, match="outside input_range"):
        explain(model, x - 1, t)
    # NG has no input noise: the option leaves it alone; the default is eq. 30 per example
    ng = table1._explain_fn("ng/rect", s)(model, x, t, offset=-1.0)
    assert ng.shape == x.shape
    plain = table1._explain_fn("sg/rect", table1.QUICK)(model, x, t)
    assert not np.allclose(plain, want)
