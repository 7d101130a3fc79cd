"""Posterior math against closed forms."""

import math

import numpy as np
import pytest
import torch

from pearl_robot.core.posterior import kl_to_standard_normal, prior, product_of_gaussians, rsample
from pearl_robot.core.types import GaussianFactors, Posterior


def test_product_of_two_gaussians_matches_closed_form():
    """N(m1, v1) * N(m2, v2) has var v1 v2 / (v1 + v2) and mean (m1 v2 + m2 v1) / (v1 + v2)."""
    m = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]])
    v = torch.tensor([[[0.5, 2.0], [1.5, 0.25]]])
    post = product_of_gaussians(GaussianFactors(m, v))
    v1, v2 = v[0, 0], v[0, 1]
    m1, m2 = m[0, 0], m[0, 1]
    torch.testing.assert_close(post.var[0], v1 * v2 / (v1 + v2))
    torch.testing.assert_close(post.mean[0], (m1 * v2 + m2 * v1) / (v1 + v2))


def test_product_is_permutation_invariant_and_shrinks_with_n():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 50, 5, generator=g)
    v = torch.rand(3, 50, 5, generator=g) + 0.1
    a = product_of_gaussians(GaussianFactors(m, v))
    perm = torch.randperm(50, generator=g)
    b = product_of_gaussians(GaussianFactors(m[:, perm], v[:, perm]))
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.var, b.var)
    half = product_of_gaussians(GaussianFactors(m[:, :25], v[:, :25]))
    assert torch.all(a.var < half.var)


def test_prior_as_extra_factor_equals_adding_unit_precision():
    m = torch.tensor([[[2.0]]])
    v = torch.tensor([[[1.0]]])
    post = product_of_gaussians(GaussianFactors(m, v), include_prior=True)
    torch.testing.assert_close(post.var, torch.tensor([[0.5]]))
    torch.testing.assert_close(post.mean, torch.tensor([[1.0]]))


def test_kl_closed_form_and_zero_at_prior():
    p = prior((4,), 5)
    assert torch.allclose(kl_to_standard_normal(p), torch.zeros(4))
    mean = torch.tensor([[0.3, -1.0]])
    var = torch.tensor([[0.2, 3.0]])
    expected = sum(0.5 * (s + mu**2 - 1 - math.log(s)) for mu, s in zip([0.3, -1.0], [0.2, 3.0]))
    assert kl_to_standard_normal(Posterior(mean, var)).item() == pytest.approx(expected, rel=1e-5)


def test_rsample_moments_and_gradient():
    mean = torch.tensor([1.0, -3.0], requires_grad=True)
    var = torch.tensor([0.25, 4.0], requires_grad=True)
    g = torch.Generator().manual_seed(1)
    z = rsample(Posterior(mean.expand(20000, 2), var.expand(20000, 2)), g)
    np.testing.assert_allclose(z.mean(0).detach().numpy(), [1.0, -3.0], atol=0.05)
    np.testing.assert_allclose(z.var(0).detach().numpy(), [0.25, 4.0], rtol=0.05)
    z.sum().backward()
    assert mean.grad is not None and var.grad is not None
