"""The online belief equals core.posterior's product of Gaussians and stays bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pearl_robot.core.posterior import product_of_gaussians
from pearl_robot.core.types import GaussianFactors
from pearl_robot.runtime.belief import OnlineBelief


def _factors(rng: np.random.Generator, n: int, latent: int = 5) -> tuple[np.ndarray, np.ndarray]:
    mu = rng.normal(0.0, 1.0, size=(n, latent))
    var = np.exp(rng.uniform(-4.0, 1.0, size=(n, latent)))
    return mu, var


def _pog(mu: np.ndarray, var: np.ndarray, include_prior: bool = False) -> tuple:
    post = product_of_gaussians(GaussianFactors(torch.as_tensor(mu)[None],
                                                torch.as_tensor(var)[None]),
                                include_prior=include_prior)
    return post.mean[0].numpy(), post.var[0].numpy()


@pytest.mark.parametrize("include_prior", [False, True])
def test_equals_core_product_of_gaussians(include_prior: bool) -> None:
    """Same factors, same convention: running sums give training's closed form."""
    rng = np.random.default_rng(0)
    mu, var = _factors(rng, 37)
    b = OnlineBelief(5, window=100, include_prior=include_prior)
    for i in range(len(mu)):
        b.add(mu[i], var[i])
    m, v = _pog(mu, var, include_prior)
    np.testing.assert_allclose(b.mean, m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.var, v, rtol=1e-10)
    assert b.count == 37


def test_empty_context_is_the_prior() -> None:
    b = OnlineBelief(3, window=10)
    np.testing.assert_array_equal(b.mean, np.zeros(3))
    np.testing.assert_array_equal(b.var, np.ones(3))
    b.add(np.ones(3), np.full(3, 0.5))
    assert b.var[0] == pytest.approx(0.5)
    b.reset()
    np.testing.assert_array_equal(b.var, np.ones(3))
    assert b.count == 0


def test_window_keeps_only_the_newest() -> None:
    rng = np.random.default_rng(1)
    mu, var = _factors(rng, 250)
    b = OnlineBelief(5, window=40)
    for i in range(len(mu)):
        b.add(mu[i], var[i])
        if i in (10, 39, 40, 117, 249):
            lo = max(0, i + 1 - 40)
            m, v = _pog(mu[lo:i + 1], var[lo:i + 1])
            np.testing.assert_allclose(b.mean, m, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b.var, v, rtol=1e-9)
    assert b.count == 40


@pytest.mark.parametrize("window", [None, 30])
def test_forgetting_is_a_weighted_product(window: int | None) -> None:
    """With decay lam, a factor k steps old counts with weight lam**k (precision and mean)."""
    rng = np.random.default_rng(2)
    lam = 0.9
    mu, var = _factors(rng, 80)
    b = OnlineBelief(5, window=window, forgetting=lam)
    for i in range(len(mu)):
        b.add(mu[i], var[i])
    n = len(mu) if window is None else window
    ages = np.arange(n)[::-1]  # oldest first in the kept slice
    w = lam ** ages[:, None]
    prec = (w / var[-n:]).sum(0)
    mean = (w * mu[-n:] / var[-n:]).sum(0) / prec
    np.testing.assert_allclose(b.var, 1.0 / prec, rtol=1e-9)
    np.testing.assert_allclose(b.mean, mean, rtol=1e-9, atol=1e-12)


def test_unbounded_context_refused() -> None:
    with pytest.raises(ValueError, match="unbounded"):
        OnlineBelief(5, window=None, forgetting=1.0)


@pytest.mark.parametrize("window,forgetting", [(200, 1.0), (None, 0.995), (500, 0.999)])
def test_variance_does_not_collapse_over_100k_steps(window: int | None,
                                                    forgetting: float) -> None:
    """100k confident factors (var 1e-3, i.e. hours at 20 Hz): the variance stays at the
    level the bounded context allows, and the running sums have not drifted."""
    rng = np.random.default_rng(3)
    n, L = 100_000, 5
    mu = rng.normal(0.3, 0.5, size=(n, L))
    var = np.full((n, L), 1e-3) * np.exp(rng.uniform(-0.2, 0.2, size=(n, L)))
    b = OnlineBelief(L, window=window, forgetting=forgetting)
    for i in range(n):
        b.add(mu[i], var[i])
    eff = window if forgetting == 1.0 else min(
        1.0 / (1.0 - forgetting), float(window or np.inf))
    # about var_i / effective context size, never collapsing toward var_i / 100k
    assert b.var.min() > 0.5 * 1e-3 * np.exp(-0.2) / eff
    assert b.var.min() > 20 * 1e-3 / n
    # no drift: compare with an exact recomputation over the kept factors
    k = window or n
    ages = np.arange(k)[::-1][:, None]
    w = forgetting ** ages
    prec = (w / var[-k:]).sum(0)
    np.testing.assert_allclose(b.var, 1.0 / prec, rtol=1e-9)
    np.testing.assert_allclose(b.mean, (w * mu[-k:] / var[-k:]).sum(0) / prec, rtol=1e-8)
