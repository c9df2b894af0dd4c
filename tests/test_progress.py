"""tfmollify.explainers.progress: the bar appears for slow work only, False prints nothing, the
automatic
choice; and its use in explain_dataset, table1, the demo and the CLI (fake clocks, no sleeps)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from tfmollify.explainers import progress


class Clock:
    """A fake ``time.monotonic``: advanced by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_env(monkeypatch):
    """No TFMOLLIFY_PROGRESS or CI from the environment the tests run in."""
    monkeypatch.delenv("TFMOLLIFY_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_fast_work_prints_nothing(capsys):
    clock = Clock()
    with progress.bar(10, enabled=True, clock=clock) as b:
        for _ in range(10):
            clock.t += 0.29  # 2.9 s in all: under the 3 s delay
            b.update(1)
    assert b.count == 10 and b.enabled and not b.shown
    assert capsys.readouterr().out == ""


def test_slow_work_shows_the_bar_after_the_delay(capsys):
    clock = Clock()
    with progress.bar(5, enabled=True, clock=clock, unit="example") as b:
        for i in range(5):
            clock.t += 1.0
            b.update(1)
            if i < 2:  # 1 s and 2 s: not yet
                assert not b.shown and capsys.readouterr().out == ""
    out = capsys.readouterr().out
    assert b.shown and b.count == 5
    assert "3/5" in out and "5/5" in out and "/example" in out  # Keras' count and time/unit
    assert out.endswith("\n")
    assert out.count("5/5") == 1  # the final line is not repeated in a log file


def test_disabled_prints_nothing_even_when_slow(capsys):
    clock = Clock()
    with progress.bar(3, enabled=False, clock=clock, delay_s=0) as b:
        for _ in range(3):
            clock.t += 100.0
            b.update(1)
    assert b.count == 3 and not b.enabled and not b.shown
    assert capsys.readouterr().out == ""


def test_unknown_total_zero_delay_and_the_delay_default(capsys, monkeypatch):
    with progress.bar(None, enabled=True, delay_s=0) as b:
        b.update(7)
    out = capsys.readouterr().out
    assert "7/Unknown" in out and b.shown
    monkeypatch.setattr(progress, "DEFAULT_DELAY_S", 0.0)  # read when a bar opens
    with progress.bar(2, enabled=True) as b:
        b.update(2)
    assert b.shown and "2/2" in capsys.readouterr().out


def test_a_terminal_gets_a_bar_redrawn_in_place_and_clear(monkeypatch, no_env):
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    clock = Clock()
    with progress.bar(4, clock=clock, unit="batch") as b:  # automatic: on at a terminal
        assert b.enabled
        clock.t += 5.0
        b.update(1)
        b.clear()
        print("a log line")
        b.update(3)
    text = tty.getvalue()
    first = text.index("1/4")
    assert text[:first].startswith("\r")  # redrawn in place, not on new lines
    assert "\r\x1b[Ka log line\n" in text  # the bar line is erased before the log line
    assert text.index("4/4") > text.index("a log line") and text.endswith("\n")


def test_an_exception_ends_the_line_without_a_final_count(capsys):
    clock = Clock()
    with pytest.raises(RuntimeError), progress.bar(4, enabled=True, clock=clock, delay_s=0) as b:
        b.update(1)
        raise RuntimeError("boom")
    out = capsys.readouterr().out
    assert "1/4" in out and "4/4" not in out and out.endswith("\n")
    with pytest.raises(ValueError, match="closed"):
        b.update(1)
    b.close()  # idempotent


def test_automatic_choice(monkeypatch, capsys, no_env):
    assert not progress.auto_enabled()  # stdout captured: not a terminal
    monkeypatch.setattr(sys, "stdout", Tty())
    assert progress.auto_enabled()
    monkeypatch.setenv("CI", "true")
    assert not progress.auto_enabled()
    monkeypatch.setenv("TFMOLLIFY_PROGRESS", "1")  # the variable wins over CI ...
    assert progress.auto_enabled()
    with progress.bar(3, enabled=False) as outer:  # ... but not over an open bar
        assert not progress.auto_enabled()
        assert not progress.bar(3).enabled
        assert progress.bar(3, enabled=True).enabled  # an explicit True still shows
    assert not outer.enabled and progress.auto_enabled()
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("TFMOLLIFY_PROGRESS", off)
        assert not progress.auto_enabled()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setenv("TFMOLLIFY_PROGRESS", "yes")
    assert progress.auto_enabled()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(total=-1), ValueError, "`total` must be a non-negative int"),
        (dict(total=2.5), ValueError, "Received: total=2.5"),
        (dict(total=3, enabled="yes"), TypeError, "`enabled` must be True, False or None"),
        (dict(total=3, delay_s=-1), ValueError, "`delay_s` must be a finite number"),
        (dict(total=3, delay_s=float("nan")), ValueError, "Received: delay_s=nan"),
        (dict(total=3, unit=""), TypeError, "`unit` must be a non-empty str"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        progress.bar(**kwargs)


def test_bad_update():
    with progress.bar(3, enabled=False) as b, pytest.raises(ValueError, match="Received: n=-1"):
        b.update(-1)


# -- users --------------------------------------------------------------------------------------
@pytest.fixture
def recorded_bars(monkeypatch):
    """Every bar opened through progress.bar, shown from the first update, with its counts."""
    bars: list[tuple[progress.Bar, list[tuple[int, int | None]]]] = []
    make = progress.bar

    def bar(*args, **kwargs):
        b = make(*args, **{**kwargs, "delay_s": 0.0})
        seen: list[tuple[int, int | None]] = []
        update = b.update

        def recording_update(n=1):
            update(n)
            seen.append((b.count, b.total))

        b.update = recording_update
        bars.append((b, seen))
        return b

    monkeypatch.setattr(progress, "bar", bar)
    return bars


def test_explain_dataset_counts_every_example(recorded_bars, capsys):
    import keras
    import tensorflow as tf

    import tfmollify as tfm
    from tfmollify.integrations.dataset import explain_dataset

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(10) % 3)).batch(4)
    explainer = tfm.SmoothGrad(model, num_samples=4, seed=0)
    before = len(recorded_bars)
    explain_dataset(explainer, ds, progress=True)
    bar, seen = recorded_bars[before]  # the outermost bar (the data set's; runs inside add none)
    # counts in examples; the total is estimated from the first batch, then made exact
    assert seen == [(4, 12), (8, 12), (10, 12)]
    assert bar.count == bar.total == 10 and bar.shown
    out = capsys.readouterr().out
    assert "10/10" in out and "/example" in out
    batches = [(x[:3], 0), (x[3:], 1)]  # a list: its length is known
    before = len(recorded_bars)
    explain_dataset(explainer, iter(batches), progress=True)  # an iterator: no total
    bar, seen = recorded_bars[before]
    assert seen == [(3, None), (10, None)] and bar.total == 10
    assert "10/10" in capsys.readouterr().out
    before = len(recorded_bars)
    explain_dataset(explainer, ds, progress=False)
    assert not recorded_bars[before][0].enabled and capsys.readouterr().out == ""
    before = len(recorded_bars)
    explain_dataset(explainer, ds)  # the default is True: a bar, but only after 3 s
    assert recorded_bars[before][0].enabled


def test_explain_dataset_prints_nothing_when_fast(capsys):
    import keras
    import tensorflow as tf

    import tfmollify as tfm
    from tfmollify.integrations.dataset import explain_dataset

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(6) % 3)).batch(3)
    explain_dataset(tfm.SmoothGrad(model, num_samples=4, seed=0), ds, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_table1_shows_a_bar_over_the_methods(recorded_bars, monkeypatch, capsys):
    from tfmollify.evaluation.experiments import table1

    def fake_score(explain, models, ex):  # the explaining and scoring itself is tested elsewhere
        return {m: np.zeros(len(ex.y)) for m in table1.METRICS}, np.zeros((len(ex.y), 3))

    monkeypatch.setattr(table1, "_score_method", fake_score)
    ex = table1._Examples(np.zeros((2, 3)), np.array([1, 0]), None, None, None)
    lines: list[str] = []
    table1._score_methods(None, ex, table1.QUICK, lines.append, progress=True)
    bar, seen = recorded_bars[-1]
    assert [c for c, _ in seen] == list(range(1, 17)) and bar.total == 16
    assert len(lines) == 16 and lines[-1].startswith("[table1] [16/16] fg/rect")
    assert "16/16" in capsys.readouterr().out
    table1._score_methods(None, ex, table1.QUICK, lines.append, progress=False)
    assert not recorded_bars[-1][0].enabled and capsys.readouterr().out == ""


def test_demo_shows_a_bar_over_the_methods(recorded_bars, monkeypatch, capsys):
    import keras

    from tfmollify.explainers import explainer
    from tfmollify.interface import demo

    class FakeExplainer:  # the demo's explainers are tested end to end in test_cli
        def __init__(self, model, **kwargs):
            pass

        def __call__(self, x, targets):
            return np.zeros_like(x)

    monkeypatch.setattr(explainer, "Explainer", FakeExplainer)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    xs = np.zeros((2, 4, 4, 1), np.float32)
    lines: list[str] = []
    kw = dict(num_samples=5, num_weight_samples=2, seed=0, log=lines.append)
    demo._explain_all(model, xs, np.array([0, 2]), progress=True, **kw)
    _, seen = recorded_bars[-1]
    assert [c for c, _ in seen] == list(range(1, 16)) and len(lines) == 15
    assert "15/15" in capsys.readouterr().out
    demo._explain_all(model, xs, np.array([0, 2]), progress=False, **kw)
    assert not recorded_bars[-1][0].enabled and capsys.readouterr().out == ""


def test_cli_no_progress_reaches_table1_and_the_demo(monkeypatch, tmp_path):
    from tfmollify.evaluation.experiments import table1
    from tfmollify.interface import cli, demo

    calls = []
    monkeypatch.setattr(table1, "run", lambda *a, **kw: calls.append(kw["progress"]))
    monkeypatch.setattr(demo, "run", lambda *a, **kw: calls.append(kw["progress"]))
    for verb in ("table1", "demo"):
        assert cli.main([verb, "--out", str(tmp_path / verb)]) == 0
        assert cli.main([verb, "--out", str(tmp_path / verb), "--no-progress"]) == 0
    assert calls == [None, False, None, False]


def test_cli_explain_bar_over_the_maps_and_no_progress(monkeypatch, capsys, tmp_path, no_env):
    import keras

    from tfmollify.interface import cli

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(3, 5, 5, 1)))
    monkeypatch.setenv("TFMOLLIFY_PROGRESS", "1")
    monkeypatch.setattr(progress, "DEFAULT_DELAY_S", 0.0)
    args = ["explain", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "x.npy"),
            "--samples", "2", "--out", str(tmp_path / "o.png")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "3/3" in out and "/map" in out and "wrote" in out
    assert cli.main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3/3" not in out and out.count("wrote") == 3
