"""Plots people read: the learning curve shows a lone evaluation, on the axis it has."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pearl_robot.train.metrics import learning_curve_figure  # noqa: E402


def test_one_evaluation_shows_as_a_marker_against_environment_steps() -> None:
    """A run of one iteration: its only evaluation is a visible point, placed at its
    environment steps (it used to fall back to gradient steps, on a 4.8..5.2 axis)."""
    fig = learning_curve_figure({"charts/env_steps": [120.0], "charts/grad_steps": [5.0],
                                 "eval/test_final_return": [-16.8],
                                 "eval/test_first_return": [-20.9]})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "environment steps"
    assert [ln.get_marker() for ln in ax.lines] == ["o", "o"]
    assert list(ax.lines[0].get_xdata()) == [120.0]
    loc = ax.xaxis.get_major_locator()
    assert isinstance(loc, MaxNLocator)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert "sum of rewards" in ax.get_ylabel()
    plt.close(fig)


def test_retraining_from_logs_only_plots_against_gradient_steps() -> None:
    nan = math.nan
    fig = learning_curve_figure({"charts/env_steps": [0.0, 0.0, 0.0],
                                 "charts/grad_steps": [10.0, 20.0, 30.0],
                                 "eval/test_final_return": [nan, -5.0, -4.0]})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "gradient steps"
    assert list(ax.lines[0].get_xdata()) == [20.0, 30.0]
    plt.close(fig)


def test_many_evaluations_are_a_line_without_markers() -> None:
    n = 60
    fig = learning_curve_figure({"charts/env_steps": [100.0 * i for i in range(1, n + 1)],
                                 "eval/test_final_return": [float(i) for i in range(n)]})
    assert fig.axes[0].lines[0].get_marker() in ("None", None, "")
    plt.close(fig)
