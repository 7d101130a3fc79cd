"""Posterior math against closed forms."""

import math

import numpy as np
import pytest
import torch

from pearl_robot.core.posterior import (
    information_posterior,
    kl_to_standard_normal,
    prior,
    product_of_gaussians,
    rsample,
    spd_inverse,
)
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


def test_spd_inverse_matches_linalg_and_exports_plain_ops():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(5, 4, 6, 6, generator=g, dtype=torch.float64)
    a = b @ b.transpose(-1, -2) + 0.1 * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(spd_inverse(a), torch.linalg.inv(a), atol=1e-9, rtol=1e-9)
    # an ill-conditioned one (eigenvalues 1e-3 .. 1e3) still inverts to float64 accuracy
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    ill = q @ torch.diag(torch.logspace(-3, 3, 6, dtype=torch.float64)) @ q.T
    np.testing.assert_allclose((spd_inverse(ill) @ ill).numpy(), np.eye(6), atol=1e-8)


def _explicit_posterior(a, y, mask):
    """Posterior of z ~ N(0, I), y = A z + N(0, I) over the kept rows, by a dense solve."""
    keep = mask.bool()
    am, ym = a[keep].reshape(-1, a.shape[-1]), y[keep].reshape(-1)
    lam = am.T @ am + torch.eye(a.shape[-1], dtype=a.dtype)
    cov = torch.linalg.inv(lam)
    return cov @ am.T @ ym, torch.diagonal(cov)


def test_information_posterior_is_the_linear_gaussian_posterior_and_masks_rows():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 7, 3, 4, generator=g, dtype=torch.float64)  # 7 rows, rank 3, k = 4
    y = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    post = information_posterior(a, y, mask)
    mean, var = _explicit_posterior(a[0], y[0], mask[0])
    torch.testing.assert_close(post.mean[0], mean)
    torch.testing.assert_close(post.var[0], var)
    # masked rows contribute nothing, whatever they hold; an empty context is the prior
    a2 = a.clone()
    a2[0, 2] = 1e6
    torch.testing.assert_close(information_posterior(a2, y, mask).mean, post.mean)
    torch.testing.assert_close(post.mean[1], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(post.var[1], torch.ones(4, dtype=torch.float64))
    assert post.mean.dtype == torch.float64


def test_information_posterior_intersects_what_each_row_only_gives_along_a_direction():
    """Two precise rows, z1 + z2 = 2 and z1 - z2 = 0: the product of these full-covariance
    factors pins z = (1, 1); each row alone leaves z uncertain along the other direction, and
    a product of diagonal factors fitted to each row alone cannot recover the intersection."""
    s = 100.0  # measurement precision s^2
    a = torch.tensor([[[[s, s]], [[s, -s]]]])  # [1, N=2, r=1, k=2]
    y = torch.tensor([[[2.0 * s], [0.0]]])
    both = information_posterior(a, y, torch.ones(1, 2))
    torch.testing.assert_close(both.mean, torch.tensor([[1.0, 1.0]]), atol=1e-3, rtol=0)
    assert torch.all(both.var < 1e-3)
    first = information_posterior(a, y, torch.tensor([[1.0, 0.0]]))
    assert torch.all(first.var > 0.4)  # the line z1 + z2 = 2: each coordinate still wide
    # PEARL's product of each row's diagonal (moment-matched) factor: a diagonal carries no
    # information about which way the line runs, so the product lands between the two
    # single-row means, (0.5, 0.5), far from the intersection
    second = information_posterior(a, y, torch.tensor([[0.0, 1.0]]))
    prec = 1.0 / first.var + 1.0 / second.var
    diag_mean = (first.mean / first.var + second.mean / second.var) / prec
    assert torch.linalg.norm(diag_mean - torch.tensor([[1.0, 1.0]])) > 0.4
