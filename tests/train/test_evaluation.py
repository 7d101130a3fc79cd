"""Evaluation summaries: what 'adapted return' and the oracle-normalized score mean."""

import math

import numpy as np

from pearl_robot.train.evaluation import TaskEval, summarize


def _ev(returns, still=None, oracle=None):
    r = np.asarray(returns, dtype=float)[None]  # one repeat
    base = None if still is None else np.stack([np.full_like(r, still), np.full_like(r, oracle)])
    return TaskEval(0, r, np.zeros_like(r, dtype=bool), np.zeros((*r.shape, 2)), base)


def test_final_is_last_trajectory_and_first_is_the_prior_one():
    s = summarize([_ev([-20, -12, -8]), _ev([-18, -10, -6])], num_exp_traj=1)
    assert s.final_return == -7 and s.first_return == -19
    assert s.online_returns == [-19, -11, -7]


def test_normalized_score_is_a_ratio_of_sums_not_a_mean_of_ratios():
    # task A starts next to its goal (still -1, oracle -0.5) and does badly (-3);
    # task B is a normal start (still -20, oracle -5) and gets -6.
    s = summarize([_ev([-3], -1, -0.5), _ev([-6], -20, -5)], num_exp_traj=0)
    expected = ((-3 - 6) - (-1 - 20)) / ((-0.5 - 5) - (-1 - 20))
    assert math.isclose(s.final_normalized, expected)
    assert 0.7 < s.final_normalized < 0.8  # a mean of per-task ratios would give -1.5
    assert math.isnan(summarize([_ev([-3])], 0).final_normalized)
