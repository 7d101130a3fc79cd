"""Posterior math over the latent task variable z: pure functions, closed form.

Convention (the reference's, and the one the exported bundle declares in its contract as
``posterior_convention = "pog-no-prior"``): the posterior is the product of the per-transition
Gaussian factors only; the N(0, I) prior enters the KL term, not the product. With no context
the belief *is* the prior, N(0, I). ``include_prior=True`` multiplies the prior in as one more
factor (precision 1, mean 0), which keeps the variance below 1 and is what a bounded online
window may want; the runtime reads the convention from the contract so both sides agree.
"""

from __future__ import annotations

import torch

from pearl_robot.core.types import GaussianFactors, Posterior


def product_of_gaussians(factors: GaussianFactors, include_prior: bool = False) -> Posterior:
    """Product over the transition axis (-2) of diagonal Gaussians.

    precision = sum_i 1/var_i (+1 with the prior); mean = var * sum_i mean_i/var_i.
    """
    precision = torch.reciprocal(factors.var)
    prec_sum = precision.sum(dim=-2)
    weighted = (factors.mean * precision).sum(dim=-2)
    if include_prior:
        prec_sum = prec_sum + 1.0
    var = torch.reciprocal(prec_sum)
    return Posterior(mean=var * weighted, var=var)


def prior(batch_shape: tuple[int, ...], latent_dim: int, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> Posterior:
    """N(0, I) with the given batch shape."""
    shape = (*batch_shape, latent_dim)
    return Posterior(torch.zeros(shape, device=device, dtype=dtype),
                     torch.ones(shape, device=device, dtype=dtype))


def kl_to_standard_normal(post: Posterior) -> torch.Tensor:
    """KL(N(mean, var) || N(0, I)) summed over the latent dims, shape [...]."""
    return 0.5 * (post.var + post.mean.pow(2) - 1.0 - torch.log(post.var)).sum(dim=-1)


def rsample(post: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised sample z = mean + sqrt(var) * eps (gradients flow to mean and var)."""
    eps = torch.randn(post.mean.shape, generator=generator, device=post.mean.device,
                      dtype=post.mean.dtype)
    return post.mean + torch.sqrt(post.var) * eps


def spd_inverse(a: torch.Tensor) -> torch.Tensor:
    """Inverse of symmetric positive definite matrices [..., k, k] by the sweep operator.

    Plain broadcast arithmetic, one sweep per pivot, no pivoting (an SPD matrix's Schur
    complements stay positive), so the exported step graph needs no linear-algebra operator
    that ONNX lacks and the torch and onnxruntime results agree. Sweeping every pivot of A
    gives -A^-1."""
    k = a.shape[-1]
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    for j in range(k):
        e = eye[j]
        c = a[..., :, j]
        d = a[..., j:j + 1, j]  # [..., 1]
        cd = c / d
        a = (a - cd.unsqueeze(-1) * c.unsqueeze(-2) + cd.unsqueeze(-1) * e
             + e.unsqueeze(-1) * cd.unsqueeze(-2)
             - (e.unsqueeze(-1) * e) * (2.0 + 1.0 / d).unsqueeze(-1))
    return -a


def information_posterior(a: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> Posterior:
    """Product of the N(0, I) prior and rank-r Gaussian factors with full covariance.

    Each context row n contributes r linear measurements y[n, j] = a[n, j] . z + N(0, 1), i.e.
    the factor exp(-|y - A z|^2 / 2): precision A^T A, information A^T y. Summing these over
    the rows and inverting gives the exact posterior of that linear-Gaussian model, which,
    unlike PEARL's diagonal factors, can intersect constraints that each row only gives along
    a direction (a sphere of goals around the measured joint state becomes one linear
    equation in the goal and its squared norm). a [..., N, r, k], y [..., N, r], mask [..., N]
    (1 = in context). The marginals (mean, diagonal of the covariance) are returned; the
    solve runs in float64, because precisions summed over a window can be ill-conditioned.
    Eager torch inverts by Cholesky (4.8x faster than the sweep, forward and backward, at
    the twin recipe's training batch: bench/bench_information_solve.py); an ONNX export
    traces the sweep, which needs no operator
    that ONNX lacks, and the bundle's parity check compares the two."""
    k = a.shape[-1]
    m = mask.to(torch.float64).unsqueeze(-1)
    am = (a.to(torch.float64) * m.unsqueeze(-1)).flatten(-3, -2)  # [..., N*r, k]
    ym = (y.to(torch.float64) * m).flatten(-2, -1).unsqueeze(-1)  # [..., N*r, 1]
    at = am.transpose(-1, -2)
    eye = torch.eye(k, dtype=torch.float64, device=a.device)
    lam = at @ am + eye
    if torch.onnx.is_in_onnx_export():
        cov = spd_inverse(lam)
    else:
        cov = torch.cholesky_inverse(torch.linalg.cholesky(lam))
    mean = (cov @ (at @ ym)).squeeze(-1)
    var = (cov * eye).sum(dim=-1)  # the diagonal; ONNX's diagonal export is an If of mixed dtypes
    return Posterior(mean.to(a.dtype), var.to(a.dtype))
